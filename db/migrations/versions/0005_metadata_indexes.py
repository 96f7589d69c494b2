"""indexes for the Review page's filter choices (project, animal / region / condition)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

FIELDS = ('animal', 'region', 'condition')


def upgrade() -> None:
    for field in FIELDS:
        op.create_index(f'ix_images_project_{field}', 'images', ['project_id', field],
                        unique=False)


def downgrade() -> None:
    for field in FIELDS:
        op.drop_index(f'ix_images_project_{field}', table_name='images')
