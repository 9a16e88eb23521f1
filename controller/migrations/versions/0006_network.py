"""Network allowlists: tasks.network_allow and the log of each task's requests

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("network_allow", sa.JSON(), nullable=True))
    op.create_table(
        "network_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("bytes_up", sa.BigInteger(), nullable=False),
        sa.Column("bytes_down", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("network_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_network_requests_task_id"), ["task_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("network_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_network_requests_task_id"))
    op.drop_table("network_requests")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("network_allow")
