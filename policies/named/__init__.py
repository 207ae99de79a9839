"""Named Python checks, for what the declarative operators cannot say.

One module per level registers its checks with ``policies.checks.named_check``; importing this
package registers them all.
"""

from importlib import import_module

for _module in ("common", "level_a", "level_b", "level_c", "level_d", "level_e"):
    import_module(f"{__name__}.{_module}")
