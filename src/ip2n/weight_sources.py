"""Where the official weight files are published: the table `ip2n weights download` works from.

Each file ip2n reads (`ip2n.checkpoints.editing_weights.WEIGHT_FILES`) has one or more published
sources; `OFFICIAL_FILES` records, per source, the host, the location, the page that publishes it
(provenance), whether the location could be read from that page itself, the licence, and the size
and SHA-256 digest when the publisher states them (none of these publishers does, so none is
recorded). docs/models.md has a model card per file. This module imports nothing heavy: the CLI's
help reads it.

Hosts: "url" (a plain HTTPS link: NVIDIA's NGC catalog), "gdrive" (a Google Drive file id: pSp's and
PREIM3D's releases), "hf" (a file of a Hugging Face model repository: OpenCLIP), "browser" (a share
page that cannot be scripted: the InstructPix2NeRF authors' Quark Drive links).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

HostKind = Literal["url", "gdrive", "hf", "browser"]
DEFAULT_WAIT_SECONDS = 1800  # how long `ip2n weights download` waits for files saved in a browser


@dataclass(frozen=True)
class Host:
    """Where a file is fetched from, and where that location is published."""

    kind: HostKind
    location: str  # the URL, the Drive file id, the Hub repository id, or the share page
    published_by: str  # the page that publishes this location (provenance)
    confirmed: bool  # the location was read from that page itself (False: inferred; said so)
    filename: str = ""  # the file's name at the host (Hub repositories)
    note: str = ""

    def link(self) -> str:
        if self.kind == "gdrive":
            return f"https://drive.google.com/file/d/{self.location}/view"
        if self.kind == "hf":
            return f"https://huggingface.co/{self.location}/blob/main/{self.filename}"
        return self.location


@dataclass(frozen=True)
class OfficialFile:
    """One file ip2n reads, as published: saved in DIR/official under `name`."""

    name: str  # the file name ip2n looks for (ip2n.checkpoints.editing_weights.WEIGHT_FILES)
    component: str  # key of WEIGHT_FILES
    what: str
    host: Host
    size: int | None = None  # bytes, when the publisher states it
    sha256: str | None = None  # when the publisher states it
    licence: str = ""


_IP2N_README = "the InstructPix2NeRF README, 'Pretrained Models' (github.com/mybabyyh/InstructPix2NeRF)"
_EG3D_LICENCE = "NVIDIA Source Code License for EG3D (non-commercial research and evaluation only)"
_QUARK = (
    "a Quark Drive share page (pan.quark.cn); the name the share gives the file could not be seen from "
    "here: save or rename it to the name ip2n asks for"
)
_NO_LICENCE = "none stated in the InstructPix2NeRF repository (no licence file); ask the authors before reuse"

# component → {choice → file}. The first choice of each component is the default.
OFFICIAL_FILES: dict[str, dict[str, OfficialFile]] = {
    "generator": {
        "ngc": OfficialFile(
            "ffhq512-128.pkl",
            "generator",
            "EG3D generator, FFHQ 512², neural rendering 128² (NVIDIA's network pickle; ip2n takes G_ema)",
            Host(
                "url",
                "https://api.ngc.nvidia.com/v2/models/nvidia/research/eg3d/versions/1/files/ffhq512-128.pkl",
                "EG3D's docs/models.md (github.com/NVlabs/eg3d) sends to the NGC catalog page "
                "catalog.ngc.nvidia.com/orgs/nvidia/teams/research/models/eg3d, which lists ffhq512-128.pkl",
                confirmed=False,
                note=(
                    "the direct file URL is the form EG3D's visualizer.py and many projects use for NGC "
                    "files; it could not be read from NVIDIA's page itself. If it fails, download "
                    "ffhq512-128.pkl from the catalog page. InstructPix2NeRF ships its generator as "
                    "G_ema.pkl, described as EG3D's FFHQ 512 model; that it is this file's G_ema could not "
                    "be confirmed either (--generator instructpix2nerf takes theirs)"
                ),
            ),
            licence=_EG3D_LICENCE,
        ),
        "instructpix2nerf": OfficialFile(
            "G_ema.pkl",
            "generator",
            "EG3D generator as InstructPix2NeRF ships it (a torch.save of the TriPlaneGenerator)",
            Host("browser", "https://pan.quark.cn/s/7c5f2e04866c", _IP2N_README, confirmed=True, note=_QUARK),
            licence=_EG3D_LICENCE,
        ),
    },
    "identity": {
        "psp": OfficialFile(
            "model_ir_se50.pth",
            "identity",
            "IR-SE50 ArcFace network (TreB1eN's InsightFace_Pytorch weights, as released with pSp)",
            Host(
                "gdrive",
                "1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn",
                "the pSp README, 'IR-SE50 Model' (github.com/eladrich/pixel2style2pixel); PREIM3D's README "
                "links the same Drive file",
                confirmed=True,
            ),
            licence="MIT (TreB1eN/InsightFace_Pytorch, and pSp which redistributes it)",
        ),
        "instructpix2nerf": OfficialFile(
            "model_ir_se50.pth",
            "identity",
            "IR-SE50 ArcFace network as InstructPix2NeRF ships it",
            Host("browser", "https://pan.quark.cn/s/51801e294b38", _IP2N_README, confirmed=True, note=_QUARK),
            licence="MIT (TreB1eN/InsightFace_Pytorch)",
        ),
    },
    "encoder": {
        "instructpix2nerf": OfficialFile(
            "preim3d.pt",
            "encoder",
            "PREIM3D inversion encoder, fine-tuned by the InstructPix2NeRF authors (what their DiT was "
            "trained with)",
            Host("browser", "https://pan.quark.cn/s/5fb75d9f22ca", _IP2N_README, confirmed=True, note=_QUARK),
            licence="MIT (PREIM3D's repository licence); the fine-tuned file itself states none",
        ),
        "preim3d": OfficialFile(
            "preim3d.pt",
            "encoder",
            "PREIM3D's own FFHQ inversion encoder (not the fine-tuned one InstructPix2NeRF uses: edits "
            "differ from the paper's)",
            Host(
                "gdrive",
                "1_s-ywlNPNGg1_ZyzataHt6Y4qS0Pp4ce",
                "the PREIM3D README, 'Pretrained Models' (github.com/mybabyyh/Preim3D)",
                confirmed=True,
            ),
            licence="MIT (PREIM3D's repository licence)",
        ),
    },
    "dit": {
        "instructpix2nerf": OfficialFile(
            "instructpix2nerf.pt",
            "dit",
            "InstructPix2NeRF's conditional DiT (DiT-B_G/1_pair training checkpoint)",
            Host("browser", "https://pan.quark.cn/s/020e7faf53e9", _IP2N_README, confirmed=True, note=_QUARK),
            licence=_NO_LICENCE,
        ),
    },
    "text_encoder": {
        "laion": OfficialFile(
            "open_clip_pytorch_model.bin",
            "text_encoder",
            "OpenCLIP ViT-H-14 trained on LAION-2B (laion2b_s32b_b79k); needed only when "
            "instructpix2nerf.pt does not embed its text tower",
            Host(
                "hf",
                "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
                "open_clip's pretrained table (ViT-H-14, laion2b_s32b_b79k → this Hub repository, default "
                "file open_clip_pytorch_model.bin)",
                confirmed=True,
                filename="open_clip_pytorch_model.bin",
            ),
            licence="MIT (model card); trained on LAION-2B, whose model card puts any deployed use out of "
            "scope",
        ),
    },
}
# The order files are fetched in: scriptable ones first, then those a browser brings, then the text
# tower, which is needed only when the DiT file lacks it.
FETCH_ORDER = ("generator", "identity", "encoder", "dit")


def default_choices() -> dict[str, str]:
    return {component: next(iter(choices)) for component, choices in OFFICIAL_FILES.items()}
