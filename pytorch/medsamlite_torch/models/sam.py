"""The SAM container: an image encoder, a prompt encoder and a mask decoder."""
from __future__ import annotations

import torch
from torch import nn

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder


class Sam(nn.Module):
    """Holds the three SAM modules; inference code calls them one by one (see `medsamlite_torch.engine`).

    `order` sets the attribute (and so state_dict) order, which differs between the published
    wrappers: SAM registers image/prompt/mask, LiteMedSAM-style wrappers image/mask/prompt.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        order: tuple[str, str, str] = ("image_encoder", "prompt_encoder", "mask_decoder"),
    ) -> None:
        super().__init__()
        parts = {"image_encoder": image_encoder, "prompt_encoder": prompt_encoder, "mask_decoder": mask_decoder}
        for name in order:
            setattr(self, name, parts[name])

    @torch.no_grad()
    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed images (B,3,S,S) and boxes (B,4) in prompt space -> low-res logits, IoU."""
        return self.decode_boxes(self.image_encoder(images), boxes)

    def decode_boxes(self, embeddings: torch.Tensor, boxes: torch.Tensor, image_pe: torch.Tensor | None = None):
        """Box prompts (N, 4) in prompt space against embeddings (1 or N, 256, 64, 64) -> low-res
        logits (N, 1, 256, 256) and IoU (N, 1): mask token 0, as the published pipelines use it.
        `image_pe` may pass the (constant) dense positional encoding computed once."""
        sparse, dense = self.prompt_encoder(points=None, boxes=boxes.reshape(-1, 1, 4), masks=None)
        return self.mask_decoder(
            image_embeddings=embeddings,
            image_pe=self.prompt_encoder.get_dense_pe() if image_pe is None else image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )


def build_sam(
    image_encoder: nn.Module,
    prompt_space: int,
    order: tuple[str, str, str],
    decoder_layer_norm_eps: float = 1e-5,
) -> Sam:
    prompt_encoder = PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(prompt_space, prompt_space), mask_in_chans=16
    )
    mask_decoder = MaskDecoder(transformer_dim=256, num_multimask_outputs=3, layer_norm_eps=decoder_layer_norm_eps)
    return Sam(image_encoder, prompt_encoder, mask_decoder, order=order)
