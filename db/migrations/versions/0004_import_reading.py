"""projects keep how files are read; images keep how they were read and their pixel size;
import batches keep a status

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('read_channel', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('read_composition', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('read_low', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('read_high', sa.Float(), nullable=True))
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pixel_size_um', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('read_info', sa.JSON(), nullable=True))
    with op.batch_alter_table('import_batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=16), nullable=False,
                                      server_default='done'))
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('import_batches', schema=None) as batch_op:
        batch_op.drop_column('updated_at')
        batch_op.drop_column('status')
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_column('read_info')
        batch_op.drop_column('pixel_size_um')
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('read_high')
        batch_op.drop_column('read_low')
        batch_op.drop_column('read_composition')
        batch_op.drop_column('read_channel')
