"""mask versions record the run, threshold and model that predicted them

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('mask_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('run_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('threshold', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('model_sha256', sa.String(length=64), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_mask_versions_run_id_model_runs'),
                                    'model_runs', ['run_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('mask_versions', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_mask_versions_run_id_model_runs'),
                                 type_='foreignkey')
        batch_op.drop_column('model_sha256')
        batch_op.drop_column('threshold')
        batch_op.drop_column('run_id')
