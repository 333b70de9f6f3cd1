"""The synthetic world as an exact editor: the edited head is the source head with exactly the
requested attribute change, identity and camera untouched, rendered by the world's generator.

The world's latent is linear in the attribute codes (`ip2n.synthetic.world.latent`), so re-encoding the
head with the target attributes *is* the edit in latent space (`attribute_change` added to the
source latent gives the same latent). The result carries no 2-D editor's errors: the filters see the
pair a perfect editor would make, and identity scores measure the identity network's own
sensitivity to the attribute.
"""

from __future__ import annotations

from typing import Any

import torch

from ip2n.factory.spec import Candidate, PairState


class WorldEditor:
    name = "world"

    def describe(self) -> dict[str, Any]:
        from ip2n.builtin import PRESET_NAME

        return {"name": self.name, "generator": f"synthetic-world/{PRESET_NAME}"}

    def edit(self, state: PairState) -> list[Candidate]:
        from ip2n.factory.sources import render_world

        meta = state.source_meta
        if "target_attributes" not in meta or state.camera is None:
            raise ValueError("the world editor edits heads of the synthetic world only (use --world-heads)")
        if state.edit is not None and state.edit.attributes:
            target = {**meta["source_attributes"], **state.edit.attributes}
        else:
            target = meta["target_attributes"]
        identity = torch.tensor([meta["identity"]], dtype=torch.float32)
        camera = torch.tensor([state.camera], dtype=torch.float32)
        (image,) = render_world(identity, [target], camera, int(meta.get("size", 128)))
        return [Candidate(seed=state.job.seeds[0], image=image, meta={"target_attributes": target})]
