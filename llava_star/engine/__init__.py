"""The pruning engine, host-agnostic: plans (`plan`), the count resolver (`counts`), the
per-call context (`context`), the vision stage (`vision`), the decoder loop (`decoder`),
one prefill from merged sequence to records (`prefill`), records (`record`) and the
selector/observer seams (`seams`). Hosts (`llava_star.hosts`) attach it to a model library.
Import from the modules (this package imports nothing, so plans load without torch)."""
