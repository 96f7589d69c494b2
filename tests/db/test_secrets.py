"""The sign-in key lives in the database: one per installation, shared by every process, made
without writing to the data dir (which may be read-only), adopted from an older session.key."""
import errno
import os
import threading

from db.secrets import installation_secret

OLD_KEY = "ab" * 32


def test_one_key_per_installation_even_when_asked_at_once(engine, tmp_path):
    from db.engine import make_engine, upgrade

    gate, keys = threading.Barrier(6), []

    def ask():
        gate.wait()
        keys.append(installation_secret(engine))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(keys) == 6 and len(set(keys)) == 1 and len(keys[0]) == 32
    other = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    upgrade(other)
    assert installation_secret(other) != keys[0]
    other.dispose()


def test_a_read_only_data_dir_still_gets_a_key_and_an_old_key_file_is_adopted(
        engine, settings, monkeypatch):
    key_file = settings.data_dir / "session.key"
    key_file.write_text(OLD_KEY)
    before = sorted(settings.data_dir.rglob("*"))
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if str(path).startswith(str(settings.data_dir)) and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    assert installation_secret(engine, adopt=key_file) == bytes.fromhex(OLD_KEY)
    key_file.write_text("cd" * 32)   # adopted once: the database's key stays
    assert installation_secret(engine, adopt=key_file) == bytes.fromhex(OLD_KEY)
    assert sorted(settings.data_dir.rglob("*")) == before
