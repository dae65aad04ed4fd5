"""Hand-checked tests of the image-perturbation contrasts (VCD, RITUAL, RITUAL + VCD, VDD) and perturbations.

Expected scores are computed here with plain ``math`` on small hand-built distributions; noise statistics are
checked against ``sqrt(alpha_bar) x0`` and ``1 - alpha_bar`` on a large constant image.
"""

import math
import re
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageChops, ImageDraw

from contrastive_decoding.decoding._math import LOG_PROB_FLOOR
from contrastive_decoding.decoding.perturbations import (
    NOISE_SCHEDULES,
    RITUAL_TRANSFORMS,
    alpha_bar,
    apply_transform,
    beta_schedule,
    diffusion_noise,
    random_transform,
    seeded_generator,
    strip_image_tokens,
)
from contrastive_decoding.decoding.ritual import RitualConfig, ritual_contrast
from contrastive_decoding.decoding.ritual_vcd import RitualVcdConfig, ritual_vcd_contrast
from contrastive_decoding.decoding.vcd import VcdConfig, vcd_contrast
from contrastive_decoding.decoding.vdd import VddConfig, vdd_contrast

NEG_INF = -math.inf
COCO_IMAGES = Path("/work/shared/data/coco_images/images")

# Hand-built distributions over a 4-token vocabulary.
P_IMAGE = [0.6, 0.3, 0.05, 0.05]  # p(y | v, x): head at beta 0.1 is {0, 1} (0.05 < 0.06)
P_OTHER = [0.5, 0.1, 0.2, 0.2]  # p(y | v', x), p(y | T(v), x) or p(y | x)
P_IMAGE_2 = [0.25, 0.25, 0.25, 0.25]  # a second row: flat, every token in the head
P_OTHER_2 = [0.1, 0.2, 0.3, 0.4]


def logits_of(*rows: list[float]) -> torch.Tensor:  # [B, V] log-probabilities used as logits
    return torch.tensor(rows, dtype=torch.float32).log()


def expected(rows: list[list[float | None]]) -> torch.Tensor:  # None -> -inf
    return torch.tensor([[NEG_INF if v is None else v for v in row] for row in rows], dtype=torch.float32)


def close(actual: torch.Tensor, wanted: torch.Tensor) -> None:
    torch.testing.assert_close(actual, wanted, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# VCD
# ------------------------------------------------------------------------------------------------------------


def test_vcd_hand_computed_scores_and_head() -> None:
    scores = vcd_contrast(logits_of(P_IMAGE), logits_of(P_OTHER), VcdConfig(vcd_alpha=1.0, vcd_beta=0.1))
    want = [2 * math.log(0.6) - math.log(0.5), 2 * math.log(0.3) - math.log(0.1), None, None]
    close(scores, expected([want]))


def test_vcd_alpha_two_and_a_wider_head() -> None:
    scores = vcd_contrast(logits_of(P_IMAGE), logits_of(P_OTHER), VcdConfig(vcd_alpha=2.0, vcd_beta=0.05))
    want = [3 * math.log(p) - 2 * math.log(q) for p, q in zip(P_IMAGE, P_OTHER, strict=True)]
    close(scores, expected([want]))  # 0.05 >= 0.05 * 0.6: every token in the head


def test_vcd_zero_alpha_is_plain_logprobs_on_the_head() -> None:
    scores = vcd_contrast(logits_of(P_IMAGE), logits_of(P_OTHER), VcdConfig(vcd_alpha=0.0))
    close(scores, expected([[math.log(0.6), math.log(0.3), None, None]]))
    no_head = vcd_contrast(logits_of(P_IMAGE), logits_of(P_OTHER), VcdConfig(vcd_alpha=0.0, vcd_beta=0.0))
    close(no_head, logits_of(P_IMAGE))


def test_vcd_per_row_alpha_and_beta() -> None:
    image, perturbed = logits_of(P_IMAGE, P_IMAGE_2), logits_of(P_OTHER, P_OTHER_2)
    scores = vcd_contrast(image, perturbed, VcdConfig(), vcd_alpha=torch.tensor([0.0, 1.0]))
    row0 = [math.log(0.6), math.log(0.3), None, None]
    row1 = [2 * math.log(p) - math.log(q) for p, q in zip(P_IMAGE_2, P_OTHER_2, strict=True)]
    close(scores, expected([row0, row1]))
    for row in range(2):  # each row equals the scalar call on that row alone
        alpha = [0.0, 1.0][row]
        alone = vcd_contrast(image[row : row + 1], perturbed[row : row + 1], VcdConfig(vcd_alpha=alpha))
        close(scores[row : row + 1], alone)
    wide = vcd_contrast(image, perturbed, VcdConfig(vcd_alpha=1.0), vcd_beta=torch.tensor([0.0, 0.1]))
    assert torch.isfinite(wide).all()  # beta 0 keeps all of row 0; row 1 is flat


def test_vcd_zero_weight_branch_with_minus_inf_gives_no_nan() -> None:
    perturbed = logits_of(P_OTHER)
    perturbed[0, 2] = NEG_INF
    off = vcd_contrast(logits_of(P_IMAGE), perturbed, VcdConfig(vcd_alpha=0.0, vcd_beta=0.0))
    close(off, logits_of(P_IMAGE))
    on = vcd_contrast(logits_of(P_IMAGE), perturbed, VcdConfig(vcd_alpha=1.0, vcd_beta=0.0))
    assert not torch.isnan(on).any() and not torch.isposinf(on).any()
    close(on[0, 2], torch.tensor(2 * math.log(0.05) - LOG_PROB_FLOOR))  # floored, finite bonus


def test_vcd_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"perturbed_logits must have the shape"):
        vcd_contrast(logits_of(P_IMAGE), logits_of(P_IMAGE, P_IMAGE))
    with pytest.raises(ValueError, match=re.escape("vcd_alpha must be in [0, 100], got -1.0")):
        vcd_contrast(logits_of(P_IMAGE), logits_of(P_OTHER), vcd_alpha=torch.tensor([-1.0]))
    with pytest.raises(ValueError, match=r"vcd_alpha must be a number or a tensor of shape \[1\]"):
        vcd_contrast(logits_of(P_IMAGE), logits_of(P_OTHER), vcd_alpha=torch.tensor([1.0, 1.0]))


# ------------------------------------------------------------------------------------------------------------
# RITUAL, RITUAL + VCD, VDD
# ------------------------------------------------------------------------------------------------------------


def test_ritual_without_head_is_the_papers_sum() -> None:
    scores = ritual_contrast(logits_of(P_IMAGE), logits_of(P_OTHER), RitualConfig(ritual_beta=0.0))
    want = [math.log(p) + 3 * math.log(t) for p, t in zip(P_IMAGE, P_OTHER, strict=True)]
    close(scores, expected([want]))


def test_ritual_default_head_matches_the_authors_code() -> None:
    scores = ritual_contrast(logits_of(P_IMAGE), logits_of(P_OTHER))  # ritual_beta 0.1
    want = [math.log(0.6) + 3 * math.log(0.5), math.log(0.3) + 3 * math.log(0.1), None, None]
    close(scores, expected([want]))


def test_ritual_zero_alpha_is_the_image_branch() -> None:
    transformed = logits_of(P_OTHER)
    transformed[0, 3] = NEG_INF  # ignored at weight 0
    scores = ritual_contrast(
        logits_of(P_IMAGE), transformed, RitualConfig(ritual_alpha_pos=0.0, ritual_beta=0)
    )
    close(scores, logits_of(P_IMAGE))


def test_ritual_per_row_alpha() -> None:
    image, transformed = logits_of(P_IMAGE, P_IMAGE_2), logits_of(P_OTHER, P_OTHER_2)
    scores = ritual_contrast(
        image, transformed, RitualConfig(ritual_beta=0.0), ritual_alpha_pos=torch.tensor([0, 2])
    )
    row0 = [math.log(p) for p in P_IMAGE]
    row1 = [math.log(p) + 2 * math.log(t) for p, t in zip(P_IMAGE_2, P_OTHER_2, strict=True)]
    close(scores, expected([row0, row1]))


def test_ritual_vcd_hand_computed() -> None:
    image, transformed, perturbed = logits_of(P_IMAGE), logits_of(P_OTHER), logits_of(P_OTHER_2)
    cfg = RitualVcdConfig(ritual_alpha_pos=3.0, vcd_alpha=1.0, vcd_beta=0.1)
    scores = ritual_vcd_contrast(image, transformed, perturbed, cfg)
    want = [
        2 * math.log(p) + 3 * math.log(t) - math.log(q)
        for p, t, q in zip(P_IMAGE[:2], P_OTHER[:2], P_OTHER_2[:2], strict=True)
    ]
    close(scores, expected([[*want, None, None]]))


def test_ritual_vcd_reduces_to_each_method() -> None:
    image, transformed, perturbed = (
        logits_of(P_IMAGE, P_IMAGE_2),
        logits_of(P_OTHER, P_OTHER_2),
        logits_of(P_OTHER_2, P_OTHER),
    )
    no_vcd = ritual_vcd_contrast(image, transformed, perturbed, RitualVcdConfig(vcd_alpha=0.0))
    close(no_vcd, ritual_contrast(image, transformed, RitualConfig(ritual_alpha_pos=3.0, ritual_beta=0.1)))
    no_ritual = ritual_vcd_contrast(image, transformed, perturbed, RitualVcdConfig(ritual_alpha_pos=0.0))
    close(no_ritual, vcd_contrast(image, perturbed, VcdConfig(vcd_alpha=1.0, vcd_beta=0.1)))
    per_row = ritual_vcd_contrast(
        image,
        transformed,
        perturbed,
        vcd_alpha=torch.tensor([0.0, 2.0]),
        ritual_alpha_pos=torch.tensor([1.0, 0.0]),
    )
    close(per_row[:1], ritual_contrast(image[:1], transformed[:1], RitualConfig(ritual_alpha_pos=1.0)))
    close(per_row[1:], vcd_contrast(image[1:], perturbed[1:], VcdConfig(vcd_alpha=2.0)))


def test_vdd_hand_computed_and_zero_alpha() -> None:
    scores = vdd_contrast(logits_of(P_IMAGE), logits_of(P_OTHER), VddConfig(vdd_alpha=0.5, vdd_beta=0.0))
    want = [1.5 * math.log(p) - 0.5 * math.log(q) for p, q in zip(P_IMAGE, P_OTHER, strict=True)]
    close(scores, expected([want]))
    headed = vdd_contrast(logits_of(P_IMAGE), logits_of(P_OTHER))  # alpha 1, beta 0.1
    close(
        headed, expected([[2 * math.log(0.6) - math.log(0.5), 2 * math.log(0.3) - math.log(0.1), None, None]])
    )
    off = vdd_contrast(
        logits_of(P_IMAGE, P_IMAGE_2), logits_of(P_OTHER, P_OTHER_2), vdd_alpha=torch.tensor([0.0, 0])
    )
    close(off, expected([[math.log(0.6), math.log(0.3), None, None], [math.log(0.25)] * 4]))


def test_contrasts_accept_half_precision_logits_and_return_float32() -> None:
    image, other = logits_of(P_IMAGE).half(), logits_of(P_OTHER).bfloat16()
    for scores in (
        vcd_contrast(image, other),
        ritual_contrast(image, other),
        vdd_contrast(image, other),
        ritual_vcd_contrast(image, other, other),
    ):
        assert scores.dtype == torch.float32 and scores.shape == (1, 4)


# ------------------------------------------------------------------------------------------------------------
# Diffusion noise
# ------------------------------------------------------------------------------------------------------------


def test_linear_alpha_bar_matches_a_hand_product() -> None:
    steps = 4
    betas = [1e-4 + i * (0.02 - 1e-4) / (steps - 1) for i in range(steps)]
    product = 1.0
    for t, beta in enumerate(betas):
        product *= 1.0 - beta
        assert alpha_bar(t, "linear", steps) == pytest.approx(product, rel=1e-12)


def test_vcd_sigmoid_alpha_bar_matches_a_hand_product() -> None:
    betas = [1.0 / (1.0 + math.exp(-x)) * (0.5e-2 - 1e-5) + 1e-5 for x in (-6.0, 0.0, 6.0)]
    product = 1.0
    for t, beta in enumerate(betas):
        product *= 1.0 - beta
        assert alpha_bar(t, "vcd_sigmoid", 3) == pytest.approx(product, rel=1e-12)


def test_vcd_sigmoid_reproduces_vcd_code_at_its_default_step() -> None:
    betas = torch.sigmoid(torch.linspace(-6, 6, 1000)) * (0.5e-2 - 1e-5) + 1e-5  # VCD's code, float32
    vcd = float(torch.cumprod(1 - betas, dim=0)[500])
    assert alpha_bar(500, "vcd_sigmoid") == pytest.approx(vcd, rel=1e-5)
    assert alpha_bar(500, "vcd_sigmoid") == pytest.approx(0.7448, abs=1e-4)
    assert alpha_bar(500, "linear") == pytest.approx(0.0778, abs=1e-4)
    assert beta_schedule("linear")[0].item() == pytest.approx(1e-4)
    assert beta_schedule("linear")[-1].item() == pytest.approx(0.02)


@pytest.mark.parametrize("schedule", sorted(NOISE_SCHEDULES))
@pytest.mark.parametrize("step", [100, 500, 900])
def test_noise_mean_and_variance_match_q_x_t(schedule: str, step: int) -> None:
    x0 = 0.7
    pixels = torch.full((3, 256, 256), x0)  # 196,608 values
    noisy = diffusion_noise(pixels, step, schedule=schedule, generator=seeded_generator(0, step))
    a_bar = alpha_bar(step, schedule)
    std_of_mean = math.sqrt((1 - a_bar) / pixels.numel())
    assert noisy.mean().item() == pytest.approx(math.sqrt(a_bar) * x0, abs=5 * std_of_mean + 1e-6)
    assert noisy.var().item() == pytest.approx(1 - a_bar, rel=0.02, abs=1e-6)


@pytest.mark.parametrize("schedule", sorted(NOISE_SCHEDULES))
def test_step_zero_is_almost_the_image(schedule: str) -> None:
    pixels = torch.linspace(-2.0, 2.0, 3 * 32 * 32).reshape(3, 32, 32)
    noisy = diffusion_noise(pixels, 0, schedule=schedule, generator=seeded_generator(1, 0))
    assert (noisy - pixels).abs().mean().item() < 0.02


def test_noise_keeps_shape_dtype_and_reproduces() -> None:
    batch = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)).bfloat16()
    first = diffusion_noise(batch, 500, generator=seeded_generator(7, 0))
    again = diffusion_noise(batch, 500, generator=seeded_generator(7, 0))
    other = diffusion_noise(batch, 500, generator=seeded_generator(7, 1))
    assert first.shape == batch.shape and first.dtype == torch.bfloat16
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_one_generator_per_row_makes_rows_independent_of_the_batch() -> None:
    batch = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    noisy = diffusion_noise(batch, 300, generator=[seeded_generator(5, i) for i in range(3)])
    for i in range(3):
        alone = diffusion_noise(batch[i], 300, generator=seeded_generator(5, i))
        assert torch.equal(noisy[i], alone)
    assert not torch.equal(noisy[0] - batch[0], noisy[1] - batch[1])
    with pytest.raises(ValueError, match="one generator per row"):
        diffusion_noise(batch, 300, generator=[seeded_generator(5, 0)])


def test_noise_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=re.escape("noise_step must be in [0, 999], got 1000")):
        diffusion_noise(torch.zeros(3, 4, 4), 1000)
    with pytest.raises(ValueError, match="pixels must be a float tensor"):
        diffusion_noise(torch.zeros(4, 4), 10)
    with pytest.raises(ValueError, match="Did you mean 'vcd_sigmoid'"):
        diffusion_noise(torch.zeros(3, 4, 4), 10, schedule="vcd_sigmoud")


# ------------------------------------------------------------------------------------------------------------
# Seeded generators and RITUAL transforms
# ------------------------------------------------------------------------------------------------------------


def asymmetric_image(width: int = 64, height: int = 48) -> Image.Image:
    """Red grows left to right, green top to bottom, a white square near the top-left corner."""
    image = Image.new("RGB", (width, height))
    image.putdata(
        [(255 * x // (width - 1), 255 * y // (height - 1), 60) for y in range(height) for x in range(width)]
    )
    ImageDraw.Draw(image).rectangle((6, 5, 17, 14), fill=(255, 255, 255))
    return image


def mean_abs_difference(a: Image.Image, b: Image.Image) -> float:
    histogram = ImageChops.difference(a, b).convert("L").histogram()
    return sum(value * count for value, count in enumerate(histogram)) / (a.width * a.height)


def test_seeded_generators_are_deterministic_and_distinct() -> None:
    draw = lambda g: torch.rand(8, generator=g)  # noqa: E731
    assert torch.equal(draw(seeded_generator(3, 2)), draw(seeded_generator(3, 2)))
    samples = [draw(seeded_generator(3, i)) for i in range(4)] + [draw(seeded_generator(4, 0))]
    for i in range(len(samples)):
        for j in range(i + 1, len(samples)):
            assert not torch.equal(samples[i], samples[j])
    with pytest.raises(ValueError, match=re.escape("request_index must be in [0, inf), got -1")):
        seeded_generator(0, -1)
    with pytest.raises(ValueError, match="seed must be an integer"):
        seeded_generator(1.5, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", RITUAL_TRANSFORMS)
def test_each_transform_changes_an_asymmetric_image(name: str) -> None:
    image = asymmetric_image()
    out = apply_transform(image, name, seeded_generator(11, 0))
    assert out.mode == "RGB" and out.size == image.size
    assert mean_abs_difference(out, image) > 2.0, name
    again = apply_transform(image, name, seeded_generator(11, 0))
    assert out.tobytes() == again.tobytes()


def test_flips_move_pixels_where_expected() -> None:
    image = asymmetric_image()
    flipped = apply_transform(image, "horizontal_flip", seeded_generator(0, 0))
    assert flipped.getpixel((0, 20)) == image.getpixel((image.width - 1, 20))
    upside_down = apply_transform(image, "vertical_flip", seeded_generator(0, 0))
    assert upside_down.getpixel((30, 0)) == image.getpixel((30, image.height - 1))


def test_random_transform_is_deterministic_per_seed_and_index() -> None:
    image = asymmetric_image()
    first = [random_transform(image, seeded_generator(21, i)) for i in range(40)]
    again = [random_transform(image, seeded_generator(21, i)) for i in range(40)]
    assert [name for _, name in first] == [name for _, name in again]
    assert all(a.tobytes() == b.tobytes() for (a, _), (b, _) in zip(first, again, strict=True))
    assert {name for _, name in first} == set(RITUAL_TRANSFORMS)  # every transform gets drawn
    randomized = [out.tobytes() for out, name in first if not name.endswith("_flip")]
    assert len(set(randomized)) == len(randomized) > 20  # different indices, different parameter draws


def test_random_transform_choices_and_errors() -> None:
    image = asymmetric_image().convert("L")
    out, name = random_transform(image, seeded_generator(0, 0), transforms=("rotation",))
    assert name == "rotation" and out.mode == "RGB" and out.size == image.size
    with pytest.raises(ValueError, match="Did you mean 'rotation'"):
        random_transform(image, seeded_generator(0, 0), transforms=("rotaton",))
    with pytest.raises(ValueError, match="at least one"):
        random_transform(image, seeded_generator(0, 0), transforms=())


def test_random_transform_on_a_coco_image() -> None:
    paths = sorted(COCO_IMAGES.glob("*.jpg"))
    if not paths:
        pytest.skip(f"no COCO sample images under {COCO_IMAGES}")
    with Image.open(paths[0]) as image:
        image.load()
        for index in range(3):
            out, name = random_transform(image, seeded_generator(2024, index))
            assert name in RITUAL_TRANSFORMS
            assert out.mode == "RGB" and out.size == image.size
            assert min(out.size) >= 64


# ------------------------------------------------------------------------------------------------------------
# Prompt without the image
# ------------------------------------------------------------------------------------------------------------

PAD, IMG, IMG_START, IMG_END = 0, 99, 97, 98


def test_strip_image_tokens_re_left_pads() -> None:
    input_ids = torch.tensor(
        [
            [PAD, PAD, 5, IMG, IMG, 6, 7],
            [5, IMG_START, IMG, IMG, IMG_END, 8, 9],
            [PAD, PAD, PAD, PAD, IMG, IMG, 4],
            [1, 2, 3, 4, 5, 6, 7],
        ]
    )
    attention_mask = (input_ids != PAD).long()
    ids, mask = strip_image_tokens(input_ids, attention_mask, {IMG, IMG_START, IMG_END}, PAD)
    assert torch.equal(
        ids,
        torch.tensor(
            [
                [PAD, PAD, PAD, PAD, 5, 6, 7],
                [PAD, PAD, PAD, PAD, 5, 8, 9],
                [PAD, PAD, PAD, PAD, PAD, PAD, 4],
                [1, 2, 3, 4, 5, 6, 7],
            ]
        ),
    )
    assert torch.equal(mask, (ids != PAD).long())
    assert mask.dtype == attention_mask.dtype


def test_strip_image_tokens_shortens_and_reads_the_mask_not_the_pad_id() -> None:
    # pad id 2 also appears as a real token: only the mask says what is padding; right padding is accepted.
    input_ids = torch.tensor([[3, IMG, 2, 4], [IMG, 5, 2, 2]])
    attention_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    ids, mask = strip_image_tokens(input_ids, attention_mask, [IMG], pad_token_id=2)
    assert torch.equal(ids, torch.tensor([[3, 2, 4], [2, 2, 5]]))
    assert torch.equal(mask, torch.tensor([[True, True, True], [False, False, True]]))
    ids, mask = strip_image_tokens(torch.tensor([[IMG, 1, IMG, 2]]), None, [IMG], pad_token_id=0)
    assert torch.equal(ids, torch.tensor([[1, 2]])) and torch.equal(mask, torch.tensor([[1, 1]]))


def test_strip_image_tokens_when_nothing_is_left() -> None:
    ids, mask = strip_image_tokens(torch.tensor([[IMG, IMG]]), torch.ones(1, 2, dtype=torch.long), [IMG], 0)
    assert ids.shape == (1, 0) and mask.shape == (1, 0)


# ------------------------------------------------------------------------------------------------------------
# Config validation
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field", "value", "message"),
    [
        (VcdConfig, "vcd_alpha", -0.5, "vcd_alpha must be in [0, 100], got -0.5"),
        (VcdConfig, "vcd_alpha", 101.0, "vcd_alpha must be in [0, 100], got 101.0"),
        (VcdConfig, "vcd_beta", 1.5, "vcd_beta must be in [0, 1], got 1.5"),
        (VcdConfig, "noise_step", 1000, "noise_step must be in [0, 999], got 1000"),
        (VcdConfig, "noise_step", -1, "noise_step must be in [0, 999], got -1"),
        (VcdConfig, "noise_step", 2.5, "noise_step must be an integer in [0, 999], got 2.5"),
        (RitualConfig, "ritual_alpha_pos", -1.0, "ritual_alpha_pos must be in [0, 100], got -1.0"),
        (RitualConfig, "ritual_beta", 2.0, "ritual_beta must be in [0, 1], got 2.0"),
        (RitualVcdConfig, "ritual_alpha_pos", 200.0, "ritual_alpha_pos must be in [0, 100], got 200.0"),
        (RitualVcdConfig, "vcd_alpha", -1.0, "vcd_alpha must be in [0, 100], got -1.0"),
        (RitualVcdConfig, "vcd_beta", -0.1, "vcd_beta must be in [0, 1], got -0.1"),
        (RitualVcdConfig, "noise_step", 5000, "noise_step must be in [0, 999], got 5000"),
        (VddConfig, "vdd_alpha", 100.5, "vdd_alpha must be in [0, 100], got 100.5"),
        (VddConfig, "vdd_beta", 1.01, "vdd_beta must be in [0, 1], got 1.01"),
        (VcdConfig, "vcd_alpha", "1", "vcd_alpha must be a number in [0, 100], got '1'"),
    ],
)
def test_config_errors_name_the_parameter_and_range(
    config: type, field: str, value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        config(**{field: value})


def test_config_defaults_and_schedule_name() -> None:
    assert VcdConfig() == VcdConfig(vcd_alpha=1.0, vcd_beta=0.1, noise_step=500, noise_schedule="linear")
    assert RitualConfig().ritual_alpha_pos == 3.0
    assert VddConfig().vdd_alpha == 1.0
    assert RitualVcdConfig().ritual_alpha_pos == 3.0 and RitualVcdConfig().vcd_alpha == 1.0
    with pytest.raises(ValueError, match="noise_schedule must be one of 'linear', 'vcd_sigmoid'"):
        VcdConfig(noise_schedule="cosine")
    with pytest.raises(AttributeError):
        VcdConfig().vcd_alpha = 2.0  # type: ignore[misc]
