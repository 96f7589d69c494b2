"""Small builders shared by the db tests (tiny images drawn in the test, no fixtures on disk)."""
import numpy as np
from skimage.draw import disk

from db.projects import create_project, register_image
from db.users import create_user

SHAPE = (40, 60)


def disks(*centres, radius=5, shape=SHAPE):
    """A bool mask with one disk per (row, col) centre."""
    mask = np.zeros(shape, dtype=bool)
    for centre in centres:
        mask[disk(centre, radius, shape=shape)] = True
    return mask


def picture(seed, shape=SHAPE):
    """A distinct random RGB image per seed."""
    return np.random.default_rng(seed).integers(0, 255, (*shape, 3), dtype=np.uint8)


def project_with_images(session, storage, n=1, *, name="p", stain="yellow"):
    """A project with ``n`` registered images; returns (project, [image, ...])."""
    project = create_project(session, name, stain=stain)
    images = [register_image(session, storage, project.id, picture(i), name=f"img{i}.png").image
              for i in range(n)]
    return project, images


def user(session, name, role="operator"):
    return create_user(session, name, "correct horse battery", role=role)
