"""The 2-D editors behind one interface (`base.Editor`): each turns a prepared source and an edit into
candidate edited images, one per seed.

- `world` (`world.py`): the synthetic world as an exact editor: the edit is applied in the head's
  latent and rendered at the source's camera. Needs no downloaded weights.
- `ip2p` (`ip2p.py`): diffusers' InstructPix2Pix pipeline, several seeds per pair.

`build_editor(settings)` makes the one the settings name; tests pass their own instances.
"""

from __future__ import annotations

from ip2n.factory.editors.base import Editor
from ip2n.factory.spec import FactorySettings


def build_editor(settings: FactorySettings) -> Editor:
    if settings.editor == "world":
        from ip2n.factory.editors.world import WorldEditor

        return WorldEditor()
    if settings.editor == "ip2p":
        from ip2n.factory.editors.ip2p import InstructPix2PixEditor

        return InstructPix2PixEditor.from_settings(settings)
    raise ValueError(f"unknown editor {settings.editor!r}")


__all__ = ["Editor", "build_editor"]
