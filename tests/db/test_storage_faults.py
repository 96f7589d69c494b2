"""The file store on a full, read-only or shared disk: a sentence, no half files, the umask's
mode."""
import errno
import os
import stat

import numpy as np
import pytest

from db import storage as storage_module
from db.storage import DiskError, Storage


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _image(seed=0, shape=(300, 400)):
    return np.random.default_rng(seed).integers(0, 255, shape + (3,), dtype=np.uint8)


def test_a_full_disk_is_a_sentence_and_leaves_no_half_file(tmp_path, monkeypatch):
    store = Storage(tmp_path / "data")
    real_write = os.write
    written = []

    def fills_up(fd, data):
        # The first call to a file in the store lands half its bytes; then the disk is full.
        if str(store.root) not in os.readlink(f"/proc/self/fd/{fd}"):
            return real_write(fd, data)
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(real_write(fd, bytes(data[: len(data) // 2])))
        return written[-1]

    monkeypatch.setattr(os, "write", fills_up)
    with pytest.raises(DiskError) as caught:
        store.put_image(_image())
    message = str(caught.value)
    assert written and written[0] > 0, "the failure happened mid-file"
    assert str(store.root / "images") in message and "disk is full" in message
    assert "python -m db gc" in message
    assert isinstance(caught.value, ValueError) and caught.value.errno == errno.ENOSPC
    assert _files(store.root) == []   # neither the PNG nor its temporary file is left


def test_a_read_only_data_dir_names_the_path_and_reads_still_work(tmp_path, monkeypatch):
    store = Storage(tmp_path / "data")
    kept = store.put_image(_image(1))
    real_open, real_mkdir = os.open, os.mkdir

    def read_only_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(store.root)) and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    def read_only_mkdir(path, *args, **kwargs):
        if str(path).startswith(str(store.root)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    monkeypatch.setattr(os, "mkdir", read_only_mkdir)
    with pytest.raises(DiskError, match="read-only") as caught:
        store.put_image(_image(2))
    assert str(store.root / "images") in str(caught.value)
    with pytest.raises(DiskError, match="read-only"):
        store.run_dir("model")
    assert store.put_image(_image(1)).existed          # already stored: nothing to write
    assert np.array_equal(store.read_image(kept.path), _image(1))
    assert _files(store.root) == [kept.path.relative_to(store.root).as_posix()]


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_stored_files_keep_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        store = Storage(tmp_path / "data")
        paths = [store.put_image(_image(3, (20, 30))).path,
                 store.put_mask(np.eye(20, 30, dtype=bool)).path,
                 store.put_heatmap(np.full((20, 30), 0.5, np.float32)).path]
    finally:
        os.umask(old)
    assert {stat.S_IMODE(os.stat(p).st_mode) for p in paths} == {0o666 & ~umask}


def test_the_temporary_file_goes_when_a_write_is_interrupted(tmp_path, monkeypatch):
    store = Storage(tmp_path / "data")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(storage_module.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.put_heatmap(np.zeros((8, 8), np.float32))
    assert _files(store.root) == []
