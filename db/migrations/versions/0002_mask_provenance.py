"""mask versions record the run, threshold and model that predicted them; open items by image

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
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a nullable column with its REFERENCES clause in place. Rebuilding the
        # table (batch mode) would drop mask_versions while images.head_version_id points into
        # it, which a filled database refuses (foreign keys are on).
        op.execute("ALTER TABLE mask_versions ADD COLUMN run_id INTEGER "
                   "REFERENCES model_runs (id)")
    else:
        op.add_column('mask_versions', sa.Column('run_id', sa.Integer(), nullable=True))
        op.create_foreign_key(op.f('fk_mask_versions_run_id_model_runs'), 'mask_versions',
                              'model_runs', ['run_id'], ['id'])
    op.add_column('mask_versions', sa.Column('threshold', sa.Float(), nullable=True))
    op.add_column('mask_versions', sa.Column('model_sha256', sa.String(length=64), nullable=True))
    # The review queue counts each image's open items (a correlated subquery per row).
    op.create_index('ix_adjudication_items_image', 'adjudication_items', ['image_id', 'status'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_adjudication_items_image', table_name='adjudication_items')
    # SQLite cannot drop a column that takes part in a foreign key: batch mode rebuilds the table.
    with op.batch_alter_table('mask_versions', schema=None) as batch_op:
        if op.get_bind().dialect.name != "sqlite":
            batch_op.drop_constraint(op.f('fk_mask_versions_run_id_model_runs'),
                                     type_='foreignkey')
        batch_op.drop_column('model_sha256')
        batch_op.drop_column('threshold')
        batch_op.drop_column('run_id')
