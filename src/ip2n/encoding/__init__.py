"""Image encoders: the PREIM3D inversion encoder (image → W+ codes) and the ArcFace identity network.

Both take the same input, `preprocess.encoder_input(image)`: 256×256 RGB in [-1, 1].
"""

from ip2n.encoding.identity import IdentityConfig, IdentityEncoder, extract_identity
from ip2n.encoding.identity import preset as identity_preset
from ip2n.encoding.irse import IRSEConfig
from ip2n.encoding.preim3d import (
    ENCODER_TYPES,
    Encoder4Editing,
    GradualStyleEncoder,
    PREIM3DEncoderConfig,
    WPlusEncoder,
    build_encoder,
    encoder_weights_from_psp,
)
from ip2n.encoding.preim3d import preset as encoder_preset
from ip2n.encoding.preprocess import encoder_input, pool_for_identity

__all__ = [
    "ENCODER_TYPES",
    "Encoder4Editing",
    "GradualStyleEncoder",
    "IRSEConfig",
    "IdentityConfig",
    "IdentityEncoder",
    "PREIM3DEncoderConfig",
    "WPlusEncoder",
    "build_encoder",
    "encoder_input",
    "encoder_preset",
    "encoder_weights_from_psp",
    "extract_identity",
    "identity_preset",
    "pool_for_identity",
]
