"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('projects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('stain', sa.String(length=16), nullable=False),
    sa.Column('pixel_size_um', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_projects')),
    sa.UniqueConstraint('name', name=op.f('uq_projects_name'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('name', name=op.f('uq_users_name'))
    )
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('entity', sa.String(length=32), nullable=False),
    sa.Column('entity_id', sa.Integer(), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_audit_log_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_log_entity', ['entity', 'entity_id'], unique=False)

    op.create_table('import_batches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('report', sa.JSON(), nullable=False),
    sa.Column('archived', sa.Boolean(), nullable=False),
    sa.Column('archived_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_import_batches_project_id_projects')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_import_batches_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_import_batches'))
    )
    with op.batch_alter_table('import_batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_import_batches_project_id'), ['project_id'], unique=False)

    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('worker_host', sa.String(length=255), nullable=True),
    sa.Column('worker_pid', sa.Integer(), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('log_tail', sa.Text(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_jobs_created_by_users')),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_jobs_project_id_projects')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_project_id'), ['project_id'], unique=False)
        batch_op.create_index('ix_jobs_status', ['status', 'id'], unique=False)

    op.create_table('images',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('original_name', sa.Text(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('stain', sa.String(length=16), nullable=True),
    sa.Column('animal', sa.String(length=64), nullable=True),
    sa.Column('region', sa.String(length=64), nullable=True),
    sa.Column('condition', sa.String(length=64), nullable=True),
    sa.Column('split', sa.String(length=16), nullable=False),
    sa.Column('split_locked', sa.Boolean(), nullable=False),
    sa.Column('hard', sa.Boolean(), nullable=False),
    sa.Column('hand_segmented', sa.Boolean(), nullable=False),
    sa.Column('unlabelled', sa.Boolean(), nullable=False),
    sa.Column('review_status', sa.String(length=16), nullable=False),
    sa.Column('archived', sa.Boolean(), nullable=False),
    sa.Column('head_version_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['import_batches.id'], name=op.f('fk_images_batch_id_import_batches')),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_images_project_id_projects')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_images')),
    sa.UniqueConstraint('project_id', 'sha256', name='uq_images_project_sha256')
    )
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_images_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index('ix_images_project_split', ['project_id', 'archived', 'split', 'id'], unique=False)
        batch_op.create_index('ix_images_queue', ['project_id', 'archived', 'review_status', 'split', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_images_sha256'), ['sha256'], unique=False)

    op.create_table('model_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('run_dir', sa.Text(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('threshold', sa.Float(), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('manifest', sa.JSON(), nullable=False),
    sa.Column('promoted', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_model_runs_job_id_jobs')),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_model_runs_project_id_projects')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_runs'))
    )
    with op.batch_alter_table('model_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_runs_project_id'), ['project_id'], unique=False)

    op.create_table('mask_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=True),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('object_count', sa.Integer(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('conflict', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_mask_versions_author_id_users')),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], name=op.f('fk_mask_versions_image_id_images')),
    sa.ForeignKeyConstraint(['parent_id'], ['mask_versions.id'], name=op.f('fk_mask_versions_parent_id_mask_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mask_versions'))
    )
    with op.batch_alter_table('mask_versions', schema=None) as batch_op:
        batch_op.create_index('ix_mask_versions_image', ['image_id', 'id'], unique=False)
    # images and mask_versions point at each other: the head pointer's key comes last.
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.create_foreign_key('fk_images_head_version_id', 'mask_versions',
                                    ['head_version_id'], ['id'])

    op.create_table('adjudication_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=True),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('label', sa.Integer(), nullable=True),
    sa.Column('centroid_row', sa.Float(), nullable=False),
    sa.Column('centroid_col', sa.Float(), nullable=False),
    sa.Column('bbox', sa.JSON(), nullable=False),
    sa.Column('geometry', sa.JSON(), nullable=True),
    sa.Column('probability', sa.Float(), nullable=True),
    sa.Column('priority', sa.Float(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_adjudication_items_created_by_users')),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], name=op.f('fk_adjudication_items_image_id_images')),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_adjudication_items_project_id_projects')),
    sa.ForeignKeyConstraint(['run_id'], ['model_runs.id'], name=op.f('fk_adjudication_items_run_id_model_runs')),
    sa.ForeignKeyConstraint(['version_id'], ['mask_versions.id'], name=op.f('fk_adjudication_items_version_id_mask_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_adjudication_items'))
    )
    with op.batch_alter_table('adjudication_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_adjudication_items_image_id'), ['image_id'], unique=False)
        batch_op.create_index('ix_adjudication_items_open', ['project_id', 'status', 'priority'], unique=False)

    op.create_table('approvals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('approver_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['approver_id'], ['users.id'], name=op.f('fk_approvals_approver_id_users')),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], name=op.f('fk_approvals_image_id_images')),
    sa.ForeignKeyConstraint(['version_id'], ['mask_versions.id'], name=op.f('fk_approvals_version_id_mask_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_approvals'))
    )
    with op.batch_alter_table('approvals', schema=None) as batch_op:
        batch_op.create_index('ix_approvals_image', ['image_id', 'id'], unique=False)

    op.create_table('image_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=True),
    sa.Column('tp', sa.Integer(), nullable=False),
    sa.Column('fp', sa.Integer(), nullable=False),
    sa.Column('fn', sa.Integer(), nullable=False),
    sa.Column('n_true', sa.Integer(), nullable=False),
    sa.Column('n_pred', sa.Integer(), nullable=False),
    sa.Column('iou', sa.Float(), nullable=True),
    sa.Column('heatmap_path', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], name=op.f('fk_image_results_image_id_images')),
    sa.ForeignKeyConstraint(['run_id'], ['model_runs.id'], name=op.f('fk_image_results_run_id_model_runs')),
    sa.ForeignKeyConstraint(['version_id'], ['mask_versions.id'], name=op.f('fk_image_results_version_id_mask_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_image_results')),
    sa.UniqueConstraint('run_id', 'image_id', name='uq_image_results_run_image')
    )
    with op.batch_alter_table('image_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_image_results_image_id'), ['image_id'], unique=False)

    op.create_table('object_decisions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('label', sa.Integer(), nullable=False),
    sa.Column('cell_key', sa.Integer(), nullable=False),
    sa.Column('centroid_row', sa.Float(), nullable=False),
    sa.Column('centroid_col', sa.Float(), nullable=False),
    sa.Column('bbox', sa.JSON(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('verdict', sa.String(length=8), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], name=op.f('fk_object_decisions_image_id_images')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_object_decisions_user_id_users')),
    sa.ForeignKeyConstraint(['version_id'], ['mask_versions.id'], name=op.f('fk_object_decisions_version_id_mask_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_object_decisions'))
    )
    with op.batch_alter_table('object_decisions', schema=None) as batch_op:
        batch_op.create_index('ix_object_decisions_image', ['image_id', 'verdict'], unique=False)
        batch_op.create_index('ix_object_decisions_version', ['version_id', 'label'], unique=False)

    op.create_table('review_assignments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('blind', sa.Boolean(), nullable=False),
    sa.Column('done', sa.Boolean(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=True),
    sa.Column('assigned_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['assigned_by'], ['users.id'], name=op.f('fk_review_assignments_assigned_by_users')),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], name=op.f('fk_review_assignments_image_id_images')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_review_assignments_user_id_users')),
    sa.ForeignKeyConstraint(['version_id'], ['mask_versions.id'], name=op.f('fk_review_assignments_version_id_mask_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_assignments')),
    sa.UniqueConstraint('image_id', 'user_id', name='uq_review_assignments_image_user')
    )
    with op.batch_alter_table('review_assignments', schema=None) as batch_op:
        batch_op.create_index('ix_review_assignments_user', ['user_id', 'done'], unique=False)

    op.create_table('run_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=True),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], name=op.f('fk_run_items_image_id_images')),
    sa.ForeignKeyConstraint(['run_id'], ['model_runs.id'], name=op.f('fk_run_items_run_id_model_runs')),
    sa.ForeignKeyConstraint(['version_id'], ['mask_versions.id'], name=op.f('fk_run_items_version_id_mask_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_run_items'))
    )
    with op.batch_alter_table('run_items', schema=None) as batch_op:
        batch_op.create_index('ix_run_items_image', ['image_id'], unique=False)
        batch_op.create_index('ix_run_items_run', ['run_id', 'role'], unique=False)

    op.create_table('adjudication_decisions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('expert_id', sa.Integer(), nullable=False),
    sa.Column('verdict', sa.String(length=8), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['expert_id'], ['users.id'], name=op.f('fk_adjudication_decisions_expert_id_users')),
    sa.ForeignKeyConstraint(['item_id'], ['adjudication_items.id'], name=op.f('fk_adjudication_decisions_item_id_adjudication_items')),
    sa.ForeignKeyConstraint(['version_id'], ['mask_versions.id'], name=op.f('fk_adjudication_decisions_version_id_mask_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_adjudication_decisions')),
    sa.UniqueConstraint('item_id', name=op.f('uq_adjudication_decisions_item_id'))
    )
    op.create_table('object_outcomes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('result_id', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=2), nullable=False),
    sa.Column('centroid_row', sa.Float(), nullable=False),
    sa.Column('centroid_col', sa.Float(), nullable=False),
    sa.Column('bbox', sa.JSON(), nullable=False),
    sa.Column('area', sa.Integer(), nullable=True),
    sa.Column('iou', sa.Float(), nullable=True),
    sa.Column('probability', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['result_id'], ['image_results.id'], name=op.f('fk_object_outcomes_result_id_image_results')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_object_outcomes'))
    )
    with op.batch_alter_table('object_outcomes', schema=None) as batch_op:
        batch_op.create_index('ix_object_outcomes_result', ['result_id', 'outcome'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('object_outcomes', schema=None) as batch_op:
        batch_op.drop_index('ix_object_outcomes_result')

    op.drop_table('object_outcomes')
    op.drop_table('adjudication_decisions')
    with op.batch_alter_table('run_items', schema=None) as batch_op:
        batch_op.drop_index('ix_run_items_run')
        batch_op.drop_index('ix_run_items_image')

    op.drop_table('run_items')
    with op.batch_alter_table('review_assignments', schema=None) as batch_op:
        batch_op.drop_index('ix_review_assignments_user')

    op.drop_table('review_assignments')
    with op.batch_alter_table('object_decisions', schema=None) as batch_op:
        batch_op.drop_index('ix_object_decisions_version')
        batch_op.drop_index('ix_object_decisions_image')

    op.drop_table('object_decisions')
    with op.batch_alter_table('image_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_image_results_image_id'))

    op.drop_table('image_results')
    with op.batch_alter_table('approvals', schema=None) as batch_op:
        batch_op.drop_index('ix_approvals_image')

    op.drop_table('approvals')
    with op.batch_alter_table('adjudication_items', schema=None) as batch_op:
        batch_op.drop_index('ix_adjudication_items_open')
        batch_op.drop_index(batch_op.f('ix_adjudication_items_image_id'))

    op.drop_table('adjudication_items')
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_constraint('fk_images_head_version_id', type_='foreignkey')
    with op.batch_alter_table('mask_versions', schema=None) as batch_op:
        batch_op.drop_index('ix_mask_versions_image')

    op.drop_table('mask_versions')
    with op.batch_alter_table('model_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_runs_project_id'))

    op.drop_table('model_runs')
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_images_sha256'))
        batch_op.drop_index('ix_images_queue')
        batch_op.drop_index('ix_images_project_split')
        batch_op.drop_index(batch_op.f('ix_images_batch_id'))

    op.drop_table('images')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_status')
        batch_op.drop_index(batch_op.f('ix_jobs_project_id'))

    op.drop_table('jobs')
    with op.batch_alter_table('import_batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_import_batches_project_id'))

    op.drop_table('import_batches')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_log_entity')

    op.drop_table('audit_log')
    op.drop_table('users')
    op.drop_table('projects')
