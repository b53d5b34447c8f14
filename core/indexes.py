"""Index types Django lacks."""

from __future__ import annotations

import copy

from django.db import models
from django.db.models.expressions import OrderBy


class NullsOrderedIndex(models.Index):
    """An index whose keys state NULLS FIRST/LAST, so PostgreSQL can serve a keyset ORDER BY that states
    them too. SQLite (the embedded default) refuses null ordering in an index: there the keys are created
    without it, which is what that engine sorts by anyway."""

    def create_sql(self, model, schema_editor, using="", **kwargs):
        if schema_editor.connection.vendor == "postgresql":
            return super().create_sql(model, schema_editor, using=using, **kwargs)
        plain = copy.copy(self)
        plain.expressions = tuple(
            OrderBy(e.expression, descending=e.descending) if isinstance(e, OrderBy) else e for e in self.expressions)
        return models.Index.create_sql(plain, model, schema_editor, using=using, **kwargs)
