"""The pure tensor functions of MixedAE, against brute-force references."""
import math

import pytest
import torch
import torch.nn.functional as F

from mixedae_mm import ops
from mixedae_mm.ops.fast import cpu_kernels, sparse_attention


@pytest.fixture(params=['c_kernel', 'torch_ops'])
def sparse_softmax_path(request, monkeypatch):
    """Runs a test on both implementations of the fast path's softmax: the
    C kernel (skipped where it cannot be built) and the PyTorch ops."""
    if request.param == 'c_kernel':
        if not cpu_kernels.available():
            pytest.skip(f'C kernel: {cpu_kernels.unavailable_reason()}')
    else:
        monkeypatch.setattr(cpu_kernels, 'available', lambda: False)
    return request.param


def _same_selection(a, b):
    """Selections are sets: the order of the K keys is unspecified."""
    return torch.equal(a.sort(-1).values, b.sort(-1).values)


def _tagged_tokens(batch, num_patches):
    """Token (b, n) = [b, n]: lets a test read where every patch came from."""
    b = torch.arange(batch)[:, None].expand(-1, num_patches)
    n = torch.arange(num_patches)[None, :].expand(batch, -1)
    return torch.stack((b, n), dim=-1).float()


@pytest.mark.parametrize('num_mixed,num_patches,group', [(3, 16, 4),
                                                         (2, 196, 4),
                                                         (4, 12, 2)])
def test_partition_gives_each_slot_k_positions(num_mixed, num_patches,
                                               group):
    torch.manual_seed(0)
    owner = ops.sample_partition(num_mixed, num_patches, group)
    assert owner.shape == (num_mixed, num_patches)
    counts = F.one_hot(owner, group).sum(1)
    assert (counts == num_patches // group).all()


def test_partition_is_random_per_group():
    torch.manual_seed(0)
    owner = ops.sample_partition(8, 64, 4)
    assert len({tuple(o.tolist()) for o in owner}) == 8


def test_mixing_is_a_partition_with_positions_preserved():
    torch.manual_seed(0)
    group, num_mixed, num_patches = 4, 3, 16
    tokens = _tagged_tokens(group * num_mixed, num_patches)
    owner = ops.sample_partition(num_mixed, num_patches, group)
    mixed = ops.mix_tokens(tokens, owner)
    assert mixed.shape == (num_mixed, num_patches, 2)
    for m in range(num_mixed):
        source, position = mixed[m, :, 0].long(), mixed[m, :, 1].long()
        # positions preserved
        assert (position == torch.arange(num_patches)).all()
        # sources are the group's own images, as the owner map says
        assert (source == m * group + owner[m]).all()
        # every (image, position) of the group appears exactly once
        seen = {(int(s), int(p)) for s, p in zip(source, position)}
        assert len(seen) == num_patches
        per_image = torch.bincount(source - m * group, minlength=group)
        assert (per_image == num_patches // group).all()


def test_mix_images_equals_mixing_embedded_tokens():
    torch.manual_seed(0)
    group, patch = 4, 4
    images = torch.randn(8, 3, 16, 16)
    owner = ops.sample_partition(2, 16, group)
    conv = torch.nn.Conv2d(3, 5, patch, stride=patch)

    def embed(x):
        return conv(x).flatten(2).transpose(1, 2)

    mixed_pixels = embed(ops.mix_images(images, owner, patch))
    mixed_tokens = ops.mix_tokens(embed(images), owner)
    torch.testing.assert_close(mixed_pixels, mixed_tokens)


def test_mix_images_rejects_wrong_grid():
    owner = torch.zeros(1, 9, dtype=torch.long)
    with pytest.raises(ValueError, match='16 patches'):
        ops.mix_images(torch.zeros(4, 3, 16, 16), owner, 4)


def test_unmix_inverts_mix():
    torch.manual_seed(0)
    group, num_patches, dim = 4, 16, 6
    tokens = torch.randn(8, num_patches, dim)
    owner = ops.sample_partition(2, num_patches, group)
    mask_token = torch.full((dim, ), 7.0)
    unmixed = ops.unmix_tokens(
        ops.mix_tokens(tokens, owner), owner, mask_token, group)
    assert unmixed.shape == tokens.shape
    to_predict = ops.reconstruction_mask(owner, group).bool()
    assert (to_predict.sum(1) == num_patches - num_patches // group).all()
    torch.testing.assert_close(unmixed[~to_predict], tokens[~to_predict])
    assert (unmixed[to_predict] == 7.0).all()


def test_check_mixing_shapes_messages():
    with pytest.raises(ValueError, match='multiple of 4.*drop_last'):
        ops.check_mixing_shapes(6, 16, 4)
    with pytest.raises(ValueError, match='divisible by the mixing group'):
        ops.check_mixing_shapes(8, 18, 4)
    with pytest.raises(ValueError, match='>= 1'):
        ops.check_mixing_shapes(8, 16, 0)


def _topk_reference(scores, k, prefix=1):
    """Per-query loop: cls row keeps all, patch rows keep cls + top-k."""
    keep = torch.zeros_like(scores, dtype=torch.bool)
    *lead, length, _ = scores.shape
    flat_scores = scores.reshape(-1, length, length)
    flat_keep = keep.view(-1, length, length)
    for s in range(flat_scores.shape[0]):
        for q in range(length):
            if q < prefix:
                flat_keep[s, q] = True
                continue
            flat_keep[s, q, :prefix] = True
            order = sorted(range(prefix, length),
                           key=lambda j: -float(flat_scores[s, q, j]))
            for j in order[:k]:
                flat_keep[s, q, j] = True
    return keep


def test_topk_mask_selects_exactly_k_and_matches_reference():
    torch.manual_seed(0)
    scores = torch.randn(2, 3, 17, 17)
    keep, indices = ops.topk_attention_mask(scores, k=4)
    assert indices.shape == (2, 3, 16, 4)
    # patch queries: exactly k patch keys, and the cls key
    assert (keep[..., 1:, 1:].sum(-1) == 4).all()
    assert keep[..., 1:, 0].all()
    # the cls query attends to everything
    assert keep[..., 0, :].all()
    assert torch.equal(keep, _topk_reference(scores, 4))
    # the indices are the kept patch keys
    from_indices = torch.zeros_like(keep[..., 1:, 1:])
    from_indices.scatter_(-1, indices, True)
    assert torch.equal(from_indices, keep[..., 1:, 1:])


def test_ordered_int32_keys_sort_like_the_floats():
    torch.manual_seed(0)
    special = torch.tensor([
        -math.inf, -3e38, -1.5, -1e-40, -0.0, 0.0, 1e-40, 1e-30, 2.0, 3e38,
        math.inf
    ])
    scores = torch.cat((special, torch.randn(500), torch.randn(500) * 1e-3))
    keys = ops.ordered_int32_keys(scores)
    assert keys.dtype == torch.int32
    i, j = torch.randint(scores.numel(), (2, 20000))
    assert torch.equal(keys[i] < keys[j], scores[i] < scores[j])
    assert torch.equal(keys[i] == keys[j], scores[i] == scores[j])
    assert keys[4] == keys[5]  # -0.0 and 0.0 are equal scores: tied keys
    assert torch.equal(scores[:11], special)  # the input is left alone


@pytest.mark.parametrize('k', [1, 7, 16])
def test_topk_select_is_a_top_k_with_and_without_ties(k):
    torch.manual_seed(0)
    scores = torch.randn(3, 2, 16, 16)
    scores[..., 5] = scores[..., 3]  # tied keys
    scores[0, 0, 0] = 0.  # a row of ties only
    for s in (scores, scores.transpose(-2, -1)):  # also a strided input
        indices = ops.topk_select(s, k)
        assert indices.shape == (3, 2, 16, k)
        picked = torch.zeros_like(s, dtype=torch.bool).scatter_(
            -1, indices, True)
        assert (picked.sum(-1) == k).all()  # k distinct keys
        lowest_kept = s.masked_fill(~picked, math.inf).amin(-1)
        highest_dropped = s.masked_fill(picked, -math.inf).amax(-1)
        assert (lowest_kept >= highest_dropped).all()
        # without ties, the same keys as torch.topk on the floats
        untied = (lowest_kept > highest_dropped)
        expected = torch.zeros_like(picked).scatter_(
            -1, s.topk(k, dim=-1).indices, True)
        assert torch.equal(picked[untied], expected[untied])


def test_topk_select_with_scores_returns_the_selected_fp32_scores():
    torch.manual_seed(0)
    scores = torch.randn(2, 3, 16, 16)
    scores[0, 0, 0, :6] = torch.tensor(
        [-0.0, 0.0, -math.inf, math.inf, -1e-40, 3e38])
    selected, indices = ops.topk_select_with_scores(scores, 7)
    assert torch.equal(indices, ops.topk_select(scores, 7))
    # bit for bit, except that -0.0 comes back as 0.0 (an equal score)
    assert torch.equal(selected, scores.gather(-1, indices) + 0.0)
    assert selected.dtype == torch.float32
    # the same from keys built in the scores' own memory (a strided view)
    padded = torch.zeros(2, 3, 17, 17)
    padded[..., 1:, 1:] = scores
    in_place = ops.topk_select_with_scores(padded[..., 1:, 1:], 7,
                                           overwrite=True)
    assert torch.equal(in_place[0], selected)
    assert torch.equal(in_place[1], indices)


def test_sparse_probabilities_are_the_masked_softmax():
    torch.manual_seed(0)
    scores = torch.randn(2, 3, 17, 17)
    keep, indices = ops.topk_attention_mask(scores, k=4)
    expected = scores.masked_fill(~keep, -math.inf).softmax(-1)
    selected = scores[..., 1:, 1:].gather(-1, indices)
    patch_probs = torch.cat((scores[..., 1:, :1], selected), -1).softmax(-1)
    prefix_probs = scores[..., :1, :].softmax(-1)
    for index in (indices, indices.to(torch.uint8)):
        probs = sparse_attention._dense_probabilities(prefix_probs,
                                                      patch_probs, index)
        torch.testing.assert_close(probs, expected)


def test_topk_mask_rejects_bad_k():
    with pytest.raises(ValueError, match='top-k'):
        ops.topk_attention_mask(torch.zeros(1, 5, 5), k=5)


def test_topk_attention_equals_masked_softmax_reference(sparse_softmax_path):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 9, 4) for _ in range(3))
    result = ops.topk_attention(q, k, v, top_k=2)
    scores = q @ k.transpose(-2, -1) / 2.0  # sqrt(head dim 4)
    keep = _topk_reference(scores, 2)
    expected = torch.zeros_like(v)
    for idx in torch.cartesian_prod(*(torch.arange(s) for s in (2, 2, 9))):
        b, h, i = idx.tolist()
        cols = keep[b, h, i].nonzero().flatten()
        weights = torch.softmax(scores[b, h, i, cols], dim=0)
        expected[b, h, i] = weights @ v[b, h, cols]
    torch.testing.assert_close(result.out, expected)


def test_topk_attention_with_all_keys_is_global_attention(sparse_softmax_path):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 4) for _ in range(3))
    result = ops.topk_attention(q, k, v, top_k=8)
    torch.testing.assert_close(result.out,
                               F.scaled_dot_product_attention(q, k, v))


def _qkv_with_tied_keys(seed=0, heads=3, length=17, dims=8):
    """q, k, v (fp32, requires grad) where some patch keys are duplicated,
    so many patch queries see exactly tied scores at the top-k boundary."""
    torch.manual_seed(seed)
    q, k, v = (torch.randn(2, heads, length, dims) for _ in range(3))
    k[:, :, 5] = k[:, :, 3]
    k[:, :, 9] = k[:, :, 3]
    k[:, :, 12] = k[:, :, 7]
    return tuple(t.requires_grad_() for t in (q, k, v))


@pytest.mark.parametrize('top_k', [1, 4, 16])
def test_fast_topk_attention_equals_reference_with_ties(
        top_k, sparse_softmax_path):
    q, k, v = _qkv_with_tied_keys()
    scores = q[..., 1:, :] @ k[..., 1:, :].transpose(-2, -1)
    assert (scores[..., 2] == scores[..., 4]).all()  # ties are present
    grad_out = torch.randn_like(v)
    fast = ops.topk_attention(q, k, v, top_k)
    fast_grads = torch.autograd.grad(fast.out, (q, k, v), grad_out)
    ref = ops.topk_attention_reference(q, k, v, top_k)
    ref_grads = torch.autograd.grad(ref.out, (q, k, v), grad_out)
    assert _same_selection(fast.topk_indices, ref.topk_indices)
    torch.testing.assert_close(fast.out, ref.out, atol=1e-5, rtol=1e-5)
    for got, expected in zip(fast_grads, ref_grads):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    owner = torch.arange(16).remainder(4).expand(2, -1)
    assert ops.homologous_accuracy(fast.topk_indices, owner) == \
        ops.homologous_accuracy(ref.topk_indices, owner)


def test_tied_scores_go_to_the_lower_key_position(sparse_softmax_path):
    """The tie rule is part of the selection, so that every path (torch.topk
    on any device, the C kernel) picks the same keys."""
    scores = torch.zeros(1, 1, 9, 9)
    scores[..., 1:, 7] = 1.0  # one clear winner, then eight tied keys
    assert torch.equal(
        ops.topk_select(scores[..., 1:, 1:], 3).sort(-1).values,
        torch.tensor([0, 1, 6]).expand(1, 1, 8, 3))
    q = torch.zeros(1, 1, 9, 4)
    k = torch.zeros(1, 1, 9, 4)
    q[..., 0] = 1.0
    k[..., 7, 0] = 1.0  # the same scores, from q and k
    v = torch.randn(1, 1, 9, 4)
    fast = ops.topk_attention(q, k, v, 3)
    assert torch.equal(fast.topk_indices.sort(-1).values,
                       torch.tensor([0, 1, 6]).expand(1, 1, 8, 3))


def test_fast_topk_attention_at_vit_b_size(sparse_softmax_path):
    """ViT-B's shape (197 tokens, 64 dims, K = 49) in fp32, with a query
    whose scores are NaN: that row's output is NaN on every path."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 197, 64) for _ in range(3))
    q[1, 2, 40, 5] = math.nan
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    grad_out = torch.randn_like(v)
    fast = ops.topk_attention(q, k, v, 49)
    ref = ops.topk_attention_reference(q, k, v, 49)
    assert fast.out[1, 2, 40].isnan().all()
    assert ref.out[1, 2, 40].isnan().all()
    finite = torch.ones(2, 3, 197, dtype=torch.bool)
    finite[1, 2, 40] = False
    # every other row: the same keys, outputs and gradients
    patch_rows = finite[..., 1:]
    assert _same_selection(fast.topk_indices[patch_rows],
                           ref.topk_indices[patch_rows])
    torch.testing.assert_close(fast.out[finite], ref.out[finite],
                               atol=1e-5, rtol=1e-5)
    for t in (q, k, v):  # the NaN row leaves no gradient out of reach
        t.grad = None
    clean = torch.ones_like(grad_out)
    clean[1, 2, 40] = 0
    fast_grads = torch.autograd.grad(fast.out, (q, k, v), grad_out * clean)
    ref_grads = torch.autograd.grad(ref.out, (q, k, v), grad_out * clean)
    for got, expected in zip(fast_grads, ref_grads):
        torch.testing.assert_close(got[1, :2], expected[1, :2],
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[0], expected[0], atol=1e-5,
                                   rtol=1e-5)


@pytest.mark.parametrize('num_prefix_tokens,top_k', [(0, 4), (2, 4),
                                                      (1, 16)])
def test_fast_topk_attention_with_other_prefixes_and_all_keys(
        num_prefix_tokens, top_k, sparse_softmax_path):
    """No prefix token, two, and K = N (every key: global attention)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 16 + num_prefix_tokens, 8,
                           requires_grad=True) for _ in range(3))
    grad_out = torch.randn_like(v)
    fast = ops.topk_attention(q, k, v, top_k, num_prefix_tokens)
    ref = ops.topk_attention_reference(q, k, v, top_k, num_prefix_tokens)
    assert _same_selection(fast.topk_indices, ref.topk_indices)
    torch.testing.assert_close(fast.out, ref.out, atol=1e-5, rtol=1e-5)
    for got, expected in zip(
            torch.autograd.grad(fast.out, (q, k, v), grad_out),
            torch.autograd.grad(ref.out, (q, k, v), grad_out)):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    if top_k == 16:
        torch.testing.assert_close(fast.out,
                                   F.scaled_dot_product_attention(q, k, v))


def test_non_finite_scores_as_in_the_reference(sparse_softmax_path):
    """-inf and sign-bit NaN rank lowest, +inf and NaN highest; a row's
    softmax is NaN exactly where the masked softmax's is, and a kept -inf
    gets probability 0."""
    torch.manual_seed(0)
    neg_nan = -torch.tensor(math.nan)
    assert neg_nan.view(torch.int32) < 0  # the sign bit is set
    scores = torch.randn(2, 3, 9, 9)
    scores[0, 0, :, 4] = -math.inf  # a key column no query should select
    scores[0, 1, :, 6] = neg_nan  # the same, x86's default NaN (and the
    # cls query, which attends to every key: a NaN row)
    scores[0, 2, 3, 0] = -math.inf  # a patch query's cls logit
    scores[1, 0, 5, 2] = math.inf  # selected first: a NaN softmax row
    scores[1, 1, 2, 7] = math.nan  # the same
    scores[1, 2, 4, 1:] = -math.inf  # every patch key -inf: all on cls
    scores[1, 2, 6, 3] = -math.inf  # and K = 3 of 8: one -inf kept
    scores[1, 2, 6, 4:6] = -math.inf
    scores[1, 2, 0, 3] = -math.inf  # the cls query's row: a zero
    top_k, scale = 3, 0.5
    keep, selection = ops.topk_attention_mask(scores, top_k)
    expected = (scores * scale).masked_fill(~keep, -math.inf).softmax(-1)
    probs = scores.clone()
    _, _, topk_indices = sparse_attention._topk_softmax(probs, 1, top_k,
                                                        scale)
    assert _same_selection(topk_indices, selection)
    nan_rows = expected.isnan().any(-1)
    assert nan_rows.sum() == 3 and probs.isnan().any(-1).equal(nan_rows)
    torch.testing.assert_close(probs[~nan_rows], expected[~nan_rows])
    assert (probs[0, 0, :, 4] == 0).all() and (probs[0, 1, 1:, 6] == 0).all()
    assert probs[1, 2, 4, 0] == 1
    assert probs[0, 2, 3, 0] == 0 and probs[1, 2, 0, 3] == 0


def test_topk_select_ranks_fp64_without_rounding():
    scores = torch.tensor([[1.0, 1.0 + 1e-12, 0.5, 1.0 + 1e-12]],
                          dtype=torch.float64)
    # 1 + 1e-12 rounds to 1.0 in fp32; the tie goes to the lower position
    assert ops.topk_select(scores, 1).tolist() == [[1]]
    assert sorted(ops.topk_select(scores, 2)[0].tolist()) == [1, 3]
    selected, _ = ops.topk_select_with_scores(scores, 1)
    assert selected.dtype == torch.float64 and selected.item() == 1 + 1e-12


def test_fast_topk_attention_keeps_no_probabilities_for_backward(
        sparse_softmax_path):
    """The reference keeps (M, h, L, L) tensors for backward; the fast path
    keeps none (only q, k, v, output, log-sum-exp and a compact
    selection)."""
    q, k, v = _qkv_with_tied_keys(length=33)

    def saved_shapes(fn):
        shapes = []

        def pack(t):
            shapes.append(tuple(t.shape))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(q, k, v, 8)
        return shapes

    square = (2, 3, 33, 33)
    assert square in saved_shapes(ops.topk_attention_reference)
    assert square not in saved_shapes(ops.topk_attention)


def test_topk_selection_under_bf16_autocast_equals_fp32():
    torch.manual_seed(0)
    # many keys whose scores differ in fp32 but collide in bf16
    q = torch.randn(2, 3, 65, 32)
    k = torch.randn(2, 3, 65, 32) * 0.01 + torch.randn(1, 1, 1, 32)
    fp32 = ops.select_topk_keys(q, k, 16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        under_autocast = ops.select_topk_keys(q, k, 16)
        scores_bf16 = q[..., 1:, :] @ k[..., 1:, :].transpose(-2, -1)
    assert torch.equal(under_autocast.sort(-1).values, fp32.sort(-1).values)
    # the check is meaningful: bf16 scores would select differently
    bf16_choice = ops.topk_select(scores_bf16.float(), 16).sort(-1).values
    assert not torch.equal(bf16_choice, fp32.sort(-1).values)


def test_fast_topk_attention_runs_under_bf16_autocast(sparse_softmax_path):
    q, k, v = (t.detach().bfloat16().requires_grad_()
               for t in _qkv_with_tied_keys())
    with torch.autocast('cpu', dtype=torch.bfloat16):
        fast = ops.topk_attention(q, k, v, 4)
        ref = ops.topk_attention_reference(q, k, v, 4)
    assert fast.out.dtype == torch.bfloat16
    assert _same_selection(fast.topk_indices, ref.topk_indices)
    torch.testing.assert_close(fast.out.float(), ref.out.float(),
                               atol=2e-2, rtol=2e-2)
    fast.out.float().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_homologous_accuracy_perfect_and_chance():
    torch.manual_seed(0)
    owner = ops.sample_partition(3, 16, 4)
    target = ops.homologous_target(owner).float()
    # scores that rank homologous keys first -> top-k is exactly them
    scores = torch.cat((torch.zeros(3, 1, 16), target), 1)
    scores = torch.cat((torch.zeros(3, 17, 1), scores), 2)[:, None]
    _, indices = ops.topk_attention_mask(scores, k=4)
    assert ops.homologous_accuracy(indices, owner).item() == 1.0
    # a fixed ranking ignores owners: accuracy far from perfect
    _, indices = ops.topk_attention_mask(
        torch.arange(17.).expand(3, 1, 17, 17), k=4)
    assert ops.homologous_accuracy(indices, owner).item() < 0.8


def test_homologous_accuracy_counts_selected_keys_of_the_same_owner():
    torch.manual_seed(0)
    owner = ops.sample_partition(2, 16, 4)
    indices = ops.topk_select(torch.randn(2, 3, 16, 16), 5)
    same = [
        float(owner[m, indices[m, h, i, j]] == owner[m, i])
        for m in range(2) for h in range(3) for i in range(16)
        for j in range(5)
    ]
    assert ops.homologous_accuracy(indices, owner).item() == pytest.approx(
        sum(same) / len(same))


@pytest.mark.parametrize('num_patches,group_size', [(196, 4), (64, 4),
                                                      (64, 2)])
def test_homologous_accuracy_chance_is_what_a_random_top_k_scores(
        num_patches, group_size):
    """Random top-k selections (the query's own key may be among them) on a
    real partition score the stated chance level; (K-1)/(N-1) is too low."""
    gen = torch.Generator().manual_seed(0)
    num_mixed, num_heads, top_k = 64, 4, num_patches // group_size
    owner = ops.sample_partition(num_mixed, num_patches, group_size,
                                 generator=gen)
    noise = torch.rand(num_mixed, num_heads, num_patches, num_patches,
                       generator=gen)
    indices = noise.argsort(dim=-1)[..., :top_k]
    accuracy = ops.homologous_accuracy(indices, owner).item()
    chance = ops.homologous_accuracy_chance(num_patches, group_size)
    assert chance == 1 / group_size
    # the mean of about 10^6 draws: its standard error is below 5e-4
    assert accuracy == pytest.approx(chance, abs=1.5e-3)
    excluding_self = (top_k - 1) / (num_patches - 1)
    assert abs(accuracy - excluding_self) > 3e-3


def test_homologous_accuracy_chance_rejects_a_grid_that_does_not_split():
    with pytest.raises(ValueError, match='divisible by the mixing group'):
        ops.homologous_accuracy_chance(50, 4)


def test_contrastive_loss_stays_fp32_under_bf16_autocast():
    """Under AMP the loss is the fp32 loss of the same features."""
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(4, 64, 48, generator=gen)
    owner = ops.sample_partition(4, 64, 4, generator=gen)
    reference = ops.homologous_contrastive_loss(features, owner, 0.25)
    with torch.autocast(device_type='cpu', dtype=torch.bfloat16):
        assert (features @ features.transpose(1, 2)).dtype == torch.bfloat16
        under_amp = ops.homologous_contrastive_loss(features, owner, 0.25)
        # bf16 features (a bf16 encoder's output) are upcast, not rounded
        from_bf16 = ops.homologous_contrastive_loss(
            features.bfloat16(), owner, 0.25)
    assert under_amp.dtype == torch.float32
    torch.testing.assert_close(under_amp, reference, rtol=1e-6, atol=0)
    torch.testing.assert_close(
        from_bf16,
        ops.homologous_contrastive_loss(features.bfloat16().float(), owner,
                                        0.25),
        rtol=1e-6, atol=0)


def test_contrastive_loss_hand_computed():
    # 4 tokens, owners [0, 0, 1, 1]; unit vectors at known angles
    owner = torch.tensor([[0, 0, 1, 1]])
    feats = torch.tensor([[[1., 0.], [0.6, 0.8], [0., 1.], [-1., 0.]]])
    tau = 0.5
    sims = [[1., .6, 0., -1.], [.6, 1., .8, -.6], [0., .8, 1., 0.],
            [-1., -.6, 0., 1.]]
    positive = {0: 1, 1: 0, 2: 3, 3: 2}
    total = 0.
    for i in range(4):
        denom = sum(math.exp(sims[i][a] / tau) for a in range(4) if a != i)
        total += -(sims[i][positive[i]] / tau - math.log(denom))
    expected = total / 4
    loss = ops.homologous_contrastive_loss(feats, owner, tau)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def _contrastive_reference(features, owner, tau):
    z = F.normalize(features, dim=-1)
    losses = []
    for m in range(z.shape[0]):
        for i in range(z.shape[1]):
            others = [a for a in range(z.shape[1]) if a != i]
            logits = torch.stack([z[m, i] @ z[m, a] / tau for a in others])
            log_prob = logits - torch.logsumexp(logits, 0)
            pos = [j for j, a in enumerate(others)
                   if owner[m, a] == owner[m, i]]
            losses.append(-log_prob[pos].mean())
    return torch.stack(losses).mean()


def test_contrastive_loss_positives_are_exactly_homologous_tokens():
    torch.manual_seed(0)
    owner = ops.sample_partition(2, 12, 3)
    feats = torch.randn(2, 12, 5)
    loss = ops.homologous_contrastive_loss(feats, owner, 0.25)
    torch.testing.assert_close(loss, _contrastive_reference(feats, owner,
                                                            0.25))
    # tokens that equal their homologous ones and are orthogonal to the rest
    # reach the lowest loss; relabelling one token makes it worse
    ideal = F.one_hot(owner, 3).float()
    best = ops.homologous_contrastive_loss(ideal, owner, 0.25)
    moved = owner.clone()
    moved[0, 0] = (moved[0, 0] + 1) % 3
    assert ops.homologous_contrastive_loss(ideal, moved, 0.25) > best
    assert best < loss


def test_random_masking_matches_mmpretrain_mae():
    pytest.importorskip('mmpretrain')
    from mmpretrain.models import MAEViT
    vit = MAEViT(arch='deit-tiny', img_size=32, patch_size=8)
    x = torch.randn(3, 16, 4)
    torch.manual_seed(1)
    _, mask_ref, restore_ref = vit.random_masking(x, 0.75)
    torch.manual_seed(1)
    ids_keep, mask, restore = ops.random_masking(3, 16, 0.75)
    assert torch.equal(mask, mask_ref)
    assert torch.equal(restore, restore_ref)
    assert ids_keep.shape == (3, 4)
    assert (mask.gather(1, ids_keep) == 0).all()


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64,
                                   torch.bfloat16])
@pytest.mark.parametrize('k', [1, 5, 16])
def test_fast_topk_select_equals_the_reference_sort(dtype, k):
    """The fast path's int32-key selection keeps the keys of the readable
    path's stable sort: ties (zeros of both signs, infinities, duplicated
    keys) to the lower position."""
    torch.manual_seed(0)
    scores = torch.randn(3, 2, 16, 16)
    scores[..., 5] = scores[..., 3]
    scores[0, 0, 0] = 0.
    scores[0, 0, 1, :8] = -0.0
    scores[0, 1, 2, :4] = torch.tensor([math.inf, -math.inf, math.inf, 1.])
    scores = scores.to(dtype)
    for s in (scores, scores.transpose(-2, -1)):
        assert _same_selection(ops.topk_select(s, k),
                               ops.topk_select_reference(s, k))
