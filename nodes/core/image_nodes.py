"""Image nodes (ComfyUI's names, inputs and widget order): create, scale, crop, invert, batch, pad.

IMAGE values are float tensors `[B, H, W, 3]` in [0, 1]; MASK values `[B, H, W]` in [0, 1].
"""

from __future__ import annotations

from typing import Any

from graphgen import Choice, Float, Input, Int, Node, Output

from .sizes import CROPS, IMAGE_METHODS, MAX_RESOLUTION, fit_size, scale_size


def _scaled(image: Any, width: int, height: int, method: str, crop: str) -> Any:
    from .resize import upscale

    return upscale(image.movedim(-1, 1), width, height, method, crop).movedim(1, -1)


class EmptyImage(Node):
    """A batch of images of one colour (`color` is 0xRRGGBB)."""

    display_name = "EmptyImage"
    category = "image"
    inputs = [Int("width", default=512, min=1, max=MAX_RESOLUTION, step=1),
              Int("height", default=512, min=1, max=MAX_RESOLUTION, step=1),
              Int("batch_size", default=1, min=1, max=4096),
              Int("color", default=0, min=0, max=0xFFFFFF, step=1)]
    outputs = [Output("IMAGE", "image")]

    def run(self, width: int, height: int, batch_size: int, color: int) -> Any:
        import torch

        rgb = torch.tensor([(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF], dtype=torch.float32) / 255.0
        return rgb.expand(batch_size, height, width, 3).clone()


class ImageScale(Node):
    """Resize images to a size (0 for one side keeps the aspect ratio; 0 for both: unchanged)."""

    display_name = "Upscale Image"
    category = "image/upscaling"
    inputs = [Input("image", "IMAGE", force_link=True),
              Choice("upscale_method", IMAGE_METHODS),
              Int("width", default=512, min=0, max=MAX_RESOLUTION, step=1),
              Int("height", default=512, min=0, max=MAX_RESOLUTION, step=1),
              Choice("crop", CROPS)]
    outputs = [Output("IMAGE", "image")]

    def run(self, image: Any, upscale_method: str, width: int, height: int, crop: str) -> Any:
        if width == 0 and height == 0:
            return image
        width, height = fit_size(int(image.shape[1]), int(image.shape[2]), width, height)
        return _scaled(image, width, height, upscale_method, crop)


class ImageScaleBy(Node):
    """Resize images by a factor (each side rounded to whole pixels)."""

    display_name = "Upscale Image By"
    category = "image/upscaling"
    inputs = [Input("image", "IMAGE", force_link=True),
              Choice("upscale_method", IMAGE_METHODS),
              Float("scale_by", default=1.0, min=0.01, max=8.0, step=0.01)]
    outputs = [Output("IMAGE", "image")]

    def run(self, image: Any, upscale_method: str, scale_by: float) -> Any:
        width, height = scale_size(int(image.shape[1]), int(image.shape[2]), scale_by)
        return _scaled(image, width, height, upscale_method, "disabled")


class ImageCrop(Node):
    """Cut a `width` x `height` region whose top-left corner is (`x`, `y`).

    A corner outside the image is moved to its last row/column; a region reaching past the edge
    is cut at the edge, as in ComfyUI.
    """

    display_name = "Image Crop"
    category = "image/transform"
    inputs = [Input("image", "IMAGE", force_link=True),
              Int("width", default=512, min=1, max=MAX_RESOLUTION, step=1),
              Int("height", default=512, min=1, max=MAX_RESOLUTION, step=1),
              Int("x", default=0, min=0, max=MAX_RESOLUTION, step=1),
              Int("y", default=0, min=0, max=MAX_RESOLUTION, step=1)]
    outputs = [Output("IMAGE", "image")]

    def run(self, image: Any, width: int, height: int, x: int, y: int) -> Any:
        x = min(x, int(image.shape[2]) - 1)
        y = min(y, int(image.shape[1]) - 1)
        return image[:, y : y + height, x : x + width, :]


class ImageInvert(Node):
    """Invert images (1 - value)."""

    display_name = "Invert Image"
    category = "image"
    inputs = [Input("image", "IMAGE", force_link=True)]
    outputs = [Output("IMAGE", "image")]

    def run(self, image: Any) -> Any:
        return 1.0 - image


class ImageBatch(Node):
    """Join two image batches; the second is scaled (bilinear, centre crop) to the first's size if needed."""

    display_name = "Batch Images"
    category = "image"
    inputs = [Input("image1", "IMAGE", force_link=True), Input("image2", "IMAGE", force_link=True)]
    outputs = [Output("IMAGE", "image")]

    def run(self, image1: Any, image2: Any) -> Any:
        import torch

        if image1.shape[1:] != image2.shape[1:]:
            image2 = _scaled(image2, int(image1.shape[2]), int(image1.shape[1]), "bilinear", "center")
        return torch.cat((image1, image2.to(image1.dtype)), dim=0)


class RebatchImages(Node):
    """Regroup a list of image batches into batches of `batch_size` images (a list of batches out)."""

    display_name = "Rebatch Images"
    category = "image/batch"
    input_is_list = True  # called once with every image batch of the list (and `batch_size` as [n])
    output_is_list = (True,)  # each batch flows on as its own item
    inputs = [Input("images", "IMAGE", force_link=True), Int("batch_size", default=1, min=1, max=4096)]
    outputs = [Output("IMAGE", "image")]

    def run(self, images: list[Any], batch_size: list[int]) -> list[Any]:
        from .latent_batch import rebatch_images

        return rebatch_images(images, batch_size[0])


def outpaint_feather(height: int, width: int, feathering: int, *, top: bool, bottom: bool, left: bool,
                     right: bool) -> Any:
    """The mask over the original image area `[height, width]` for outpainting.

    Near each padded side the mask fades in quadratically, `((f - d) / f) ** 2` at distance `d`
    (in pixels) from that side, so the sampler blends the new area into the old. Sides that are
    not padded do not fade. As in ComfyUI, there is no fade (all zeros) unless `2 * feathering`
    is smaller than both sides of the image.
    """
    import torch

    if feathering <= 0 or feathering * 2 >= height or feathering * 2 >= width:
        return torch.zeros((height, width), dtype=torch.float32)
    rows = torch.arange(height).view(-1, 1).expand(height, width)
    cols = torch.arange(width).view(1, -1).expand(height, width)
    far_h, far_w = torch.full_like(rows, height), torch.full_like(cols, width)
    distance = torch.stack([rows if top else far_h, height - rows if bottom else far_h,
                            cols if left else far_w, width - cols if right else far_w]).amin(dim=0)
    fade = ((feathering - distance).to(torch.float32) / feathering).clamp(min=0.0) ** 2
    return torch.where(distance < feathering, fade, torch.zeros_like(fade))


class ImagePadForOutpaint(Node):
    """Pad images with grey for outpainting; the mask is 1 on the new area, feathered into the old."""

    display_name = "Pad Image for Outpainting"
    category = "image"
    inputs = [Input("image", "IMAGE", force_link=True),
              Int("left", default=0, min=0, max=MAX_RESOLUTION, step=8),
              Int("top", default=0, min=0, max=MAX_RESOLUTION, step=8),
              Int("right", default=0, min=0, max=MAX_RESOLUTION, step=8),
              Int("bottom", default=0, min=0, max=MAX_RESOLUTION, step=8),
              Int("feathering", default=40, min=0, max=MAX_RESOLUTION, step=1)]
    outputs = [Output("IMAGE", "image"), Output("MASK", "mask")]

    def run(self, image: Any, left: int, top: int, right: int, bottom: int, feathering: int) -> tuple[Any, Any]:
        import torch

        batch, height, width, channels = (int(n) for n in image.shape)
        padded = torch.full((batch, height + top + bottom, width + left + right, channels), 0.5, dtype=torch.float32)
        padded[:, top : top + height, left : left + width, :] = image
        mask = torch.ones((height + top + bottom, width + left + right), dtype=torch.float32)
        mask[top : top + height, left : left + width] = outpaint_feather(
            height, width, feathering, top=top != 0, bottom=bottom != 0, left=left != 0, right=right != 0)
        return padded, mask.unsqueeze(0)


NODES = [EmptyImage, ImageScale, ImageScaleBy, ImageCrop, ImageInvert, ImageBatch, RebatchImages,
         ImagePadForOutpaint]
