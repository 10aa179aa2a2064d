"""On-device augmentation: crop with zero padding and horizontal flip, seeded per batch, resumable streams."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from ltfunc import augment as aug
from ltfunc.augment import CropFlip, apply_crop_flip, batch_seed, crop_flip, draw_crop_flip
from ltfunc.data import PIXEL_NORMALIZATION, PixelSplit, Split, batches


def take(it, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(itertools.islice(it, k))


def images(n: int, c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    """Distinct non-zero float images (values 1..255), so padding zeros are recognizable."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, c, h, w), generator=g).float()


def pixel_split(n: int = 40, seed: int = 0) -> PixelSplit:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return PixelSplit(x, torch.arange(n), PIXEL_NORMALIZATION["cifar10"])


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True)
    )


def window(x: torch.Tensor, top: int, left: int, flip: bool, padding: int) -> torch.Tensor:
    """The reference: one image's crop of its zero-padded copy, mirrored if asked."""
    h, w = x.shape[-2:]
    out = F.pad(x, (padding,) * 4)[..., top : top + h, left : left + w]
    return out.flip(-1) if flip else out


def find_window(out: torch.Tensor, original: torch.Tensor, padding: int = 4) -> tuple[int, int, bool] | None:
    """The (top, left, flip) that produces ``out`` from ``original``, or None."""
    for top, left, flip in itertools.product(range(2 * padding + 1), range(2 * padding + 1), (False, True)):
        if torch.equal(window(original, top, left, flip, padding), out):
            return top, left, flip
    return None


# ---------------------------------------------------------------- the batch functions


def test_crop_flip_output_is_a_window_of_the_zero_padded_input() -> None:
    x = images(64)
    params = draw_crop_flip(64, seed=3)
    out = apply_crop_flip(x, params)
    assert out.shape == x.shape and out.dtype == x.dtype
    for b in range(64):
        ref = window(x[b], int(params.top[b]), int(params.left[b]), bool(params.flip[b]), 4)
        assert torch.equal(out[b], ref)
    assert torch.equal(crop_flip(x, seed=3), out)  # draw + apply
    assert torch.equal(x, images(64))  # input untouched


@pytest.mark.parametrize("padding", [0, 1, 2])
def test_crop_flip_other_paddings_and_shapes(padding: int) -> None:
    x = images(10, c=2, h=5, w=7)
    params = draw_crop_flip(10, seed=1, padding=padding)
    out = apply_crop_flip(x, params, padding=padding)
    for b in range(10):
        ref = window(x[b], int(params.top[b]), int(params.left[b]), bool(params.flip[b]), padding)
        assert torch.equal(out[b], ref)


def test_uint8_stays_uint8_and_pads_with_zero() -> None:
    x = torch.full((8, 3, 32, 32), 200, dtype=torch.uint8)
    p = CropFlip(torch.zeros(8, dtype=torch.long), torch.full((8,), 8), torch.zeros(8, dtype=torch.bool))
    out = apply_crop_flip(x, p)
    assert out.dtype == torch.uint8
    assert bool((out[:, :, :4] == 0).all()) and bool((out[:, :, :, 28:] == 0).all())  # top and right pads
    assert bool((out[:, :, 4:, :28] == 200).all())


def test_crop_flip_is_deterministic_and_seeds_differ() -> None:
    x = images(32)
    assert torch.equal(crop_flip(x, seed=7), crop_flip(x, seed=7))
    assert not torch.equal(crop_flip(x, seed=7), crop_flip(x, seed=8))


def test_flip_rate_and_offsets_are_uniform() -> None:
    p = draw_crop_flip(36_000, seed=0)
    assert abs(p.flip.float().mean().item() - 0.5) < 0.015
    for t in (p.top, p.left):
        counts = torch.bincount(t, minlength=9)
        assert counts.numel() == 9 and int(t.min()) == 0 and int(t.max()) == 8
        assert (counts.float() / 36_000 - 1 / 9).abs().max().item() < 0.01
    # top, left and flip are independent: each (top, left, flip) cell is hit about equally
    cells = torch.bincount(p.top * 18 + p.left * 2 + p.flip.long(), minlength=162)
    assert cells.min().item() > 0.7 * 36_000 / 162


def test_flip_rate_of_a_stream_close_to_half() -> None:
    # a left-right ramp: a flipped crop is decreasing along the row
    ramp = torch.arange(1, 33, dtype=torch.float32).expand(400, 1, 32, 32).contiguous()
    split = Split(ramp, torch.arange(400))
    flips = 0
    for x, _ in take(batches(split, 100, seed=0, augment=True), 20):
        mid = x[:, 0, 16]  # a middle row: 24..32 of its pixels come from the image
        flips += int((mid[:, 12] > mid[:, 13]).sum())
    assert abs(flips / 2000 - 0.5) < 0.04


def test_batch_seed_is_a_pure_function_of_seed_and_index() -> None:
    seeds = {batch_seed(s, i) for s in range(20) for i in range(50)}
    assert len(seeds) == 1000 and all(0 <= v < 2**63 for v in seeds)
    assert batch_seed(-1, 3) == batch_seed(2**64 - 1, 3)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (
            lambda: crop_flip(torch.zeros(3, 32, 32), seed=0),
            ValueError,
            r"^crop_flip: x must be a batch of images",
        ),
        (lambda: crop_flip([1], seed=0), TypeError, r"^crop_flip: x must be a tensor"),
        (lambda: crop_flip(torch.zeros(1, 1, 2, 2), seed=0.5), TypeError, r"^crop_flip: seed must be an int"),
        (
            lambda: crop_flip(torch.zeros(1, 1, 2, 2), seed=0, padding=-1),
            ValueError,
            r"padding must be an int >= 0",
        ),
        (lambda: draw_crop_flip(-1, seed=0), ValueError, r"^draw_crop_flip: n must be an int >= 0"),
        (
            lambda: apply_crop_flip(torch.zeros(2, 1, 4, 4), (1, 2, 3)),
            TypeError,
            r"params must be a CropFlip",
        ),
        (
            lambda: apply_crop_flip(torch.zeros(2, 1, 4, 4), draw_crop_flip(3, seed=0)),
            ValueError,
            r"params must hold 2 entries",
        ),
        (
            lambda: apply_crop_flip(
                torch.zeros(1, 1, 4, 4), CropFlip(torch.tensor([9]), torch.tensor([0]), torch.tensor([False]))
            ),
            ValueError,
            r"params.top must lie in \[0, 8\]",
        ),
        (lambda: batch_seed(0, -1), ValueError, r"^batch_seed: index must be an int >= 0"),
    ],
)
def test_augment_functions_reject_bad_input(call, exc, match) -> None:
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------- augmented streams


def test_augmented_stream_is_deterministic_and_seeds_differ() -> None:
    split = pixel_split()
    a = take(batches(split, 8, seed=3, augment=True), 12)
    b = take(batches(split, 8, seed=3, augment="crop_flip"), 12)
    c = take(batches(split, 8, seed=4, augment=True), 12)
    assert same(a, b)
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c, strict=True))


def test_augmentation_keeps_the_batch_order_and_only_crops_and_flips() -> None:
    x = images(30)
    split = Split(x, torch.arange(30))
    plain = take(batches(split, 6, seed=2), 10)  # crosses two epochs
    augmented = take(batches(split, 6, seed=2, augment=True), 10)
    assert [y.tolist() for _, y in plain] == [y.tolist() for _, y in augmented]
    hits = []
    for (xa, ya), (xp, _) in zip(augmented, plain, strict=True):
        assert not torch.equal(xa, xp)
        for b, i in enumerate(ya.tolist()):
            found = find_window(xa[b], x[i])
            assert found is not None
            hits.append(found)
    assert len({t for t, _, _ in hits}) > 3 and any(f for _, _, f in hits) and not all(f for _, _, f in hits)


def test_off_by_default_and_false_changes_nothing() -> None:
    split = pixel_split()
    assert same(take(batches(split, 8, seed=1), 6), take(batches(split, 8, seed=1, augment=False), 6))
    flat = split.normalized()
    assert same(take(batches(split, 8, seed=1), 6), take(batches(flat, 8, seed=1), 6))


def test_pixel_split_pads_black_before_normalizing() -> None:
    norm = PIXEL_NORMALIZATION["cifar10"]
    white = PixelSplit(torch.full((64, 3, 32, 32), 255, dtype=torch.uint8), torch.arange(64), norm)
    x, _ = next(batches(white, 64, seed=0, augment=True))
    assert x.dtype == torch.float32
    mean = torch.tensor(norm.mean).view(3, 1, 1)
    std = torch.tensor(norm.std).view(3, 1, 1)
    black, full = ((0.0 - mean) / std).expand(3, 32, 32), ((1.0 - mean) / std).expand(3, 32, 32)
    is_black = torch.isclose(x, black.expand_as(x))
    assert bool((is_black | torch.isclose(x, full.expand_as(x))).all())
    assert 0.05 < is_black.float().mean().item() < 0.4  # crops reach into the padding


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("k", [0, 1, 4, 5, 9, 13])
def test_start_equals_islice_of_the_full_stream(k: int, augment: bool, drop_last: bool) -> None:
    split = pixel_split(22)  # 5 batches of 4 per epoch with drop_last, 6 without
    full = take(batches(split, 4, seed=9, augment=augment, drop_last=drop_last), k + 7)
    resumed = take(batches(split, 4, seed=9, augment=augment, drop_last=drop_last, start=k), 7)
    assert same(full[k:], resumed)


def test_start_with_a_generator_advances_it_like_islice() -> None:
    split = pixel_split(22)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = take(itertools.islice(batches(split, 4, generator=g1, augment=True), 11, None), 3)
    b = take(batches(split, 4, generator=g2, augment=True, start=11), 3)
    assert same(a, b) and torch.equal(g1.get_state(), g2.get_state())
    g3 = torch.Generator().manual_seed(5)
    assert same(
        take(batches(split, 4, generator=g3, augment=True), 3),
        take(batches(split, 4, seed=5, augment=True), 3),
    )


def test_batch_i_does_not_depend_on_what_was_drawn_before() -> None:
    split = pixel_split()
    ref = take(batches(split, 8, seed=3, augment=True), 6)
    one, other = batches(split, 8, seed=3, augment=True), batches(split, 8, seed=11, augment=True)
    interleaved = []
    for _ in range(6):  # another stream and other random draws in between
        next(other)
        torch.rand(5)
        crop_flip(images(2), seed=0)
        interleaved.append(next(one))
    assert same(ref, interleaved)


def test_skipping_with_start_does_not_augment_or_gather_skipped_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    original = aug._StreamAugmenter.__call__

    def counting(self, x, index):
        calls.append(index)
        return original(self, x, index)

    monkeypatch.setattr(aug._StreamAugmenter, "__call__", counting)
    split = pixel_split(40)
    take(batches(split, 8, seed=0, augment=True, start=1000), 2)
    assert calls == [1000, 1001]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (
            {"augment": "cutout"},
            ValueError,
            r"^batches: augment='cutout' is not supported. Supported: 'crop_flip'",
        ),
        ({"augment": 1}, TypeError, r"^batches: augment must be a bool or one of 'crop_flip', got int"),
        ({"start": -1}, ValueError, r"^batches: start must be an int >= 0"),
        ({"start": 1.0}, TypeError, r"^batches: start must be an int"),
    ],
)
def test_batches_rejects_bad_augment_and_start(kwargs, exc, match) -> None:
    with pytest.raises(exc, match=match):
        batches(pixel_split(), 4, seed=0, **kwargs)


def test_augment_needs_images() -> None:
    with pytest.raises(ValueError, match=r"augment='crop_flip' needs images \(N, C, H, W\), got .*\(10, 3\)"):
        batches(Split(torch.zeros(10, 3), torch.zeros(10)), 2, seed=0, augment=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augmented_batches_on_cuda_match_cpu() -> None:
    cpu = pixel_split(64)
    gpu = PixelSplit(cpu.x.cuda(), cpu.y.cuda(), cpu.normalization)
    a = take(batches(cpu, 16, seed=5, augment=True, start=3), 8)
    b = take(batches(gpu, 16, seed=5, augment=True, start=3), 8)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert xb.is_cuda and torch.equal(ya, yb.cpu())
        torch.testing.assert_close(xa, xb.cpu(), rtol=0, atol=1e-6)
