"""Image decoding and MNIST-style normalisation (digits/images.py), checked on real MNIST digits.

Every input is generated with Pillow from an MNIST test digit, so the expected answer is known:
the original digit, and the default model's prediction for it.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from digits.arrays import Bytes, Floats
from digits.images import (
    FIELD,
    ImageError,
    View,
    decode,
    normalise,
    normalise_many,
    normalise_with_box,
    prepare,
    viewed,
)
from digits.registry import DEFAULT_MODEL_DIR
from digits.theta import Model, load_dir
from trainer.mnist import Mnist, load

EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def mnist() -> Mnist:
    """MNIST takes seconds to load and verify: once per module."""
    return load()


@pytest.fixture(scope="module")
def model() -> Model:
    return Model(load_dir(DEFAULT_MODEL_DIR))


def digit(mnist: Mnist, index: int) -> Bytes:
    """One MNIST test digit as a 28 x 28 uint8 array (ink bright, as MNIST stores it)."""
    pixels: Bytes = mnist.test_images[index].reshape(FIELD, FIELD)
    return pixels


def as_field(pixels: Bytes) -> Floats:
    """What the model was trained on: uint8 / 255 as float32."""
    field: Floats = pixels.astype(np.float32) / 255.0
    return field


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def predict(model: Model, fields: Floats) -> npt.NDArray[np.intp]:
    classes: npt.NDArray[np.intp] = model.probabilities(fields.reshape(-1, 784)).argmax(axis=1)
    return classes


def centre_of_mass(field: Floats) -> tuple[float, float]:
    ys, xs = np.indices(field.shape)
    total = float(field.sum())
    return float((ys * field).sum()) / total, float((xs * field).sum()) / total


def box_side(field: Floats) -> int:
    """The longer side of the ink's bounding box."""
    rows, cols = np.nonzero(field > 0)
    return int(max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1))


def assert_mnist_field(field: Floats) -> None:
    assert field.shape == (FIELD, FIELD)
    assert field.dtype == np.float32
    assert float(field.min()) >= 0.0
    assert float(field.max()) <= 1.0
    assert float(field.max()) > 0.5, "the digit's ink was lost"


# -- formats -------------------------------------------------------------------------------

def grey(pixels: Bytes) -> Image.Image:
    return Image.fromarray(pixels, mode="L")


FORMATS: dict[str, tuple[Callable[[Bytes], bytes], bool]] = {
    # name: (encoder, lossless)
    "png": (lambda p: encode(grey(p), "PNG"), True),
    "jpeg": (lambda p: encode(grey(p), "JPEG", quality=95), False),
    "bmp": (lambda p: encode(grey(p), "BMP"), True),
    "tiff": (lambda p: encode(grey(p), "TIFF"), True),
    "pgm": (lambda p: encode(grey(p), "PPM"), True),  # Pillow writes L images as P5 (PGM)
    "ppm": (lambda p: encode(grey(p).convert("RGB"), "PPM"), True),
    "gif": (lambda p: encode(grey(p), "GIF"), True),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_format_decodes_to_the_digit(name: str, mnist: Mnist, model: Model) -> None:
    """Scans arrive in every common format; each must give back the same digit and class."""
    encoder, lossless = FORMATS[name]
    pixels = digit(mnist, 0)
    data = encoder(pixels)

    decoded = decode(data)
    assert decoded.shape == (FIELD, FIELD)
    if lossless:
        np.testing.assert_array_equal(decoded, as_field(pixels))
    else:
        assert float(np.abs(decoded - as_field(pixels)).mean()) < 0.03

    field = normalise(decoded)
    assert_mnist_field(field)
    assert predict(model, prepare(data))[0] == mnist.test_labels[0]


def test_animated_gif_uses_the_first_frame(mnist: Mnist) -> None:
    """An animated GIF is one image to us: its first frame, never a later one."""
    first, second = digit(mnist, 0), digit(mnist, 1)
    data = encode(grey(first), "GIF", save_all=True, append_images=[grey(second)], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2  # the test really made an animation

    decoded = decode(data)
    np.testing.assert_array_equal(decoded, as_field(first))
    assert_mnist_field(normalise(decoded))


# -- MNIST in, MNIST out ---------------------------------------------------------------------

def test_mnist_digits_pass_through_normalise_unchanged(mnist: Mnist) -> None:
    """MNIST digits are already normalised; redoing it must not move most of them at all."""
    fields = mnist.test_images[:1000].reshape(-1, FIELD, FIELD).astype(np.float32) / 255.0
    unchanged = sum(bool(np.allclose(normalise(f), f, rtol=0, atol=1e-6)) for f in fields)
    assert unchanged >= 850, f"only {unchanged} of 1000 MNIST digits came through normalise unchanged"


def test_a_stack_normalises_as_its_digits_do_one_at_a_time(mnist: Mnist) -> None:
    """Workers normalise same-size digits together: the fields and boxes must be exactly those of
    one digit at a time, dark-on-light and noisy ones included, and a blank one fails alone."""
    rng = np.random.default_rng(3)
    stack = mnist.test_images[:300].reshape(-1, FIELD, FIELD).astype(np.float32) / 255.0
    stack[1::3] = 1.0 - stack[1::3]  # dark ink on white paper
    stack[2::3] = np.clip(stack[2::3] + rng.uniform(0.0, 0.15, stack[2::3].shape), 0.0, 1.0)  # grey, noisy paper
    stack[7] = 0.8  # blank
    found = normalise_many(stack)
    assert len(found) == len(stack)
    assert isinstance(found[7], ImageError) and "blank" in str(found[7])
    for index, digit_field in enumerate(stack):
        if index == 7:
            continue
        alone, box = normalise_with_box(digit_field)
        together = found[index]
        assert not isinstance(together, ImageError)
        assert together[1] == box, index
        assert np.array_equal(together[0], alone), index


def test_png_pipeline_keeps_the_models_accuracy(mnist: Mnist, model: Model) -> None:
    """Bytes -> prepare -> model must score like the model on the raw test set (within 0.5 pp)."""
    count = 2000
    labels = mnist.test_labels[:count]
    direct = float((predict(model, as_field(mnist.test_images[:count])) == labels).mean())
    prepared = np.stack([prepare(encode(grey(digit(mnist, i)), "PNG")) for i in range(count)])
    assert prepared.shape == (count, 784)
    through_png = float((predict(model, prepared) == labels).mean())
    assert direct > 0.95  # a sanity check on the default model itself
    assert abs(through_png - direct) <= 0.005, f"direct {direct:.4f}, through PNG {through_png:.4f}"


def scanned(pixels: Bytes, rng: np.random.Generator) -> Bytes:
    """The digit as a scan: dark ink on noisy off-white paper, 3x larger, off-centre."""
    dark = Image.fromarray(255 - pixels, mode="L").resize((84, 84), Image.Resampling.BILINEAR)
    paper = np.clip(rng.normal(232.0, 6.0, size=(180, 240)), 0, 255).astype(np.uint8)
    top, left = int(rng.integers(5, 90)), int(rng.integers(5, 150))
    region = paper[top:top + 84, left:left + 84]
    paper[top:top + 84, left:left + 84] = np.minimum(region, np.asarray(dark, dtype=np.uint8))
    return paper


def test_dark_ink_on_light_noisy_paper_off_centre(mnist: Mnist, model: Model) -> None:
    """Real scans are dark-on-light, big, noisy and anywhere on the page; the class must not change."""
    rng = np.random.default_rng(7)
    count = 200
    originals = predict(model, as_field(mnist.test_images[:count]))
    fields = []
    for i in range(count):
        field = prepare(encode(grey(scanned(digit(mnist, i), rng)), "PNG")).reshape(FIELD, FIELD)
        assert_mnist_field(field)
        com_y, com_x = centre_of_mass(field)
        assert abs(com_y - FIELD / 2) <= 0.5 and abs(com_x - FIELD / 2) <= 0.5, (i, com_y, com_x)
        assert 19 <= box_side(field) <= 21, (i, box_side(field))
        fields.append(field)
    agree = int((predict(model, np.stack(fields)) == originals).sum())
    assert agree >= 0.95 * count, f"only {agree} of {count} scanned digits kept their class"


# -- colour, transparency, depth, orientation ---------------------------------------------------

def test_colour_rgb_input(mnist: Mnist, model: Model) -> None:
    """Blue ink on pale yellow paper is still the same digit."""
    ink = np.array([20, 40, 200], dtype=np.float32)
    paper = np.array([250, 245, 200], dtype=np.float32)
    for i in range(10):
        alpha = as_field(digit(mnist, i))[..., None]
        rgb = np.rint(paper * (1 - alpha) + ink * alpha).astype(np.uint8)
        data = encode(Image.fromarray(rgb, mode="RGB"), "PNG")
        field = prepare(data).reshape(FIELD, FIELD)
        assert_mnist_field(field)
        expected = normalise(as_field(digit(mnist, i)))
        assert float(np.abs(field - expected).mean()) < 0.02, i
        assert predict(model, field)[0] == predict(model, as_field(digit(mnist, i)))[0], i


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_background_counts_as_paper(mode: str, mnist: Mnist, model: Model) -> None:
    """Black strokes on a transparent canvas (colour black everywhere): the alpha is the digit."""
    pixels = digit(mnist, 3)
    black = Image.new("RGB" if mode == "RGBA" else "L", (FIELD, FIELD), 0)
    black.putalpha(grey(pixels))
    assert black.mode == mode
    field = prepare(encode(black, "PNG")).reshape(FIELD, FIELD)
    assert_mnist_field(field)
    assert float(np.abs(field - normalise(as_field(pixels))).max()) < 0.02
    assert predict(model, field)[0] == mnist.test_labels[3]


def test_sixteen_bit_greyscale_png(mnist: Mnist, model: Model) -> None:
    """16-bit scans must be scaled by 65535, not clipped at 255 into a white blob."""
    pixels = digit(mnist, 4)
    image = Image.fromarray(pixels.astype(np.uint16) * 257)
    data = encode(image, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # really stored as 16-bit
    decoded = decode(data)
    np.testing.assert_allclose(decoded, as_field(pixels), rtol=0, atol=1e-6)
    assert predict(model, prepare(data))[0] == mnist.test_labels[4]


@pytest.mark.parametrize(("orientation", "turns"), [(6, 1), (8, -1)])
def test_exif_rotated_jpeg_is_turned_upright(orientation: int, turns: int, mnist: Mnist, model: Model) -> None:
    """Phones store pictures sideways plus an EXIF tag; the digit must be read upright."""
    upright = np.zeros((FIELD, 40), dtype=np.uint8)  # not square, so the shape shows the rotation
    upright[:, 6:34] = digit(mnist, 0)
    stored = np.ascontiguousarray(np.rot90(upright, turns))  # 6: display turns it CW; 8: CCW
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    data = encode(grey(stored), "JPEG", quality=95, exif=exif)

    decoded = decode(data)
    assert decoded.shape == upright.shape
    assert float(np.abs(decoded - as_field(upright)).mean()) < 0.03
    assert predict(model, prepare(data))[0] == mnist.test_labels[0]


# -- refusals -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0, 128, 255])
def test_blank_image_has_no_digit(value: int) -> None:
    """An empty page must be reported, not classified as some digit."""
    data = encode(Image.new("L", (60, 40), value), "PNG")
    with pytest.raises(ImageError, match="no digits found"):
        prepare(data)


def test_blank_noisy_paper_has_no_digit() -> None:
    """A blank scanned page (paper grain, no ink) must be reported, not classified as some digit."""
    paper = np.clip(np.random.default_rng(1).normal(232.0, 6.0, (120, 120)), 0, 255).astype(np.uint8)
    with pytest.raises(ImageError, match="no digits found"):
        prepare(encode(grey(paper), "PNG"))


def test_zero_byte_input() -> None:
    with pytest.raises(ImageError, match=r"empty file \(0 bytes\)"):
        prepare(b"")


def test_truncated_png(mnist: Mnist) -> None:
    """A half-uploaded file must be an ImageError, not a crash or a partial digit."""
    data = encode(grey(digit(mnist, 0)), "PNG")
    with pytest.raises(ImageError, match="cannot decode image") as caught:
        prepare(data[: len(data) // 2])
    assert "truncated" in str(caught.value).lower()


def test_text_file_is_not_an_image() -> None:
    with pytest.raises(ImageError, match="not a recognised image format"):
        prepare(b"1,2,3\nthis is a CSV file, not a scan\n")


def test_max_pixels_refuses_larger_images(mnist: Mnist) -> None:
    """The limit is checked from the header and the message says by how much it was exceeded."""
    data = encode(grey(digit(mnist, 0)), "PNG")
    with pytest.raises(ImageError, match=r"28 x 28 = 784 pixels, over the limit of 783"):
        prepare(data, max_pixels=783)
    assert prepare(data, max_pixels=784).shape == (784,)  # the limit itself is allowed


def big_black_png(width: int, height: int) -> bytes:
    """A tiny file that decodes to a huge image: the shape of a decompression bomb."""
    return encode(Image.new("1", (width, height), 0), "PNG")


def test_decompression_bomb_refused_by_the_default_limit() -> None:
    """8000 x 8000 is 64 Mpx: over our 40 Mpx default, under Pillow's own warning threshold."""
    data = big_black_png(8000, 8000)
    assert len(data) < 100_000
    with pytest.raises(ImageError, match=r"8000 x 8000 = 64000000 pixels, over the limit of 40000000"):
        decode(data)


def test_huge_image_message_names_our_limit() -> None:
    """A 100 Mpx image is over max_pixels; the message should name the limit the caller set."""
    data = big_black_png(10_000, 10_000)
    with pytest.raises(ImageError) as caught:
        decode(data, max_pixels=40_000_000)
    message = str(caught.value)
    assert "100000000" in message
    assert "40000000" in message, message


def test_a_scaled_view_scales_a_digit_about_the_fields_centre(mnist: Mnist) -> None:
    """Scale 1 changes nothing; 0.9 shrinks the ink's box by about a tenth and its ink by about a
    fifth (the area), keeping its centre of mass where normalising put it."""
    fields = mnist.test_images[:50].astype(np.float32) / 255.0
    np.testing.assert_allclose(viewed(fields, View()), fields, atol=1e-6)
    shrunk = viewed(fields, View(scale=0.9))
    assert shrunk.shape == fields.shape and shrunk.dtype == np.float32
    kept = shrunk.sum(axis=1) / fields.sum(axis=1)
    assert abs(float(kept.mean()) - 0.81) < 0.01 and ((kept > 0.75) & (kept < 0.9)).all()

    def heights_and_centres(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = batch.reshape(-1, FIELD, FIELD)
        rows = np.arange(FIELD)
        inked = images.max(axis=2) > 0.3
        heights = np.array([np.ptp(rows[row]) for row in inked])
        centres = (images.sum(axis=2) @ rows) / images.sum(axis=(1, 2))
        return heights, centres

    heights, centres = heights_and_centres(fields)
    shrunk_heights, shrunk_centres = heights_and_centres(shrunk)
    assert 0.8 < float(np.mean(shrunk_heights / heights)) < 0.95
    np.testing.assert_allclose(shrunk_centres, FIELD / 2 + (centres - FIELD / 2) * 0.9, atol=0.3)


def test_views_move_turn_and_shear_ink_about_the_centre() -> None:
    """One bright pixel, worked out by hand: the centre is (14, 14), rows down, columns right."""
    field = np.zeros((1, FIELD, FIELD), np.float32)
    field[0, 10, 14] = 1.0  # four rows above the centre

    def where(view: View) -> tuple[int, int]:
        seen = viewed(field.reshape(1, -1), view).reshape(FIELD, FIELD)
        assert abs(float(seen.sum()) - 1.0) < 1e-6  # moved whole: no ink lost or made
        row, col = np.unravel_index(int(seen.argmax()), seen.shape)
        return int(row), int(col)

    assert where(View(right=1)) == (10, 15) and where(View(down=-2)) == (8, 14)
    assert where(View(turn=90)) == (14, 18)  # a quarter turn about the centre
    assert where(View(turn=90, shear=0.5)) == (12, 18)  # ... and sheared: four right of centre, two up
    assert where(View(scale=0.5)) == (12, 14)  # halfway to the centre


def test_decoded_size_is_bounded_before_decoding() -> None:
    """A 40 MP RGB image cost a worker 551 MiB; what its pixels would take is read from the header."""
    image = Image.new("RGB", (3000, 3000), "white")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    with pytest.raises(ImageError, match=r"3000 x 3000 RGB: 27000000 bytes decoded, over the limit of 25165824"):
        decode(buffer.getvalue())


def test_large_images_are_shrunk_before_any_float_copy() -> None:
    image = Image.new("L", (2500, 1000), 255)
    image.paste(0, (1000, 300, 1100, 700))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    grey = decode(buffer.getvalue())
    assert grey.shape == (500, 1250) and grey.dtype == np.float32  # reduced by 2: under 2,000,000 pixels
    assert grey[150:350, 500:550].max() == 0.0 and grey[0, 0] == 1.0
