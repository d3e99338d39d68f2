"""A pre-training step reads no tensor value on the host (issue 16): no `.item()/.tolist()/bool()`, no `nonzero`,
`masked_select`, `unique` or boolean-mask indexing, i.e. nothing that makes a GPU step wait for the device.

On the CPU this is proved three ways: a recorder that sees every torch call of the forward (`TorchFunctionMode`) and
every aten op of forward and backward (`TorchDispatchMode`) finds none of those calls on the accelerator path; a
whole step runs on the meta device, where any read of a value or a data-dependent shape raises; and the new selection
of the masked purchases gives the numbers of the former boolean indexing (copied below) exactly. With CUDA, one more
test runs the step under `torch.cuda.set_sync_debug_mode("error")`.
"""

import pytest
import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from modeling_shopperbert import ShopperBertForMaskedPurchasePrediction
from modeling_shopperbert import modeling_shopperbert as modeling
from modeling_shopperbert import modeling_shopperbert_layers as layers
from modeling_shopperbert.collator import DataCollatorForMaskedPurchasePrediction
from helpers import make_feature, text_matrix, tiny_config

# Python-level calls that read a value on the host (a synchronisation on an accelerator)
HOST_READ_CALLS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "cpu", "nonzero",
                   "argwhere", "masked_select", "unique", "unique_consecutive", "equal", "allclose"}
# aten ops with a data-dependent result shape or a value read (forward and backward)
HOST_READ_OPS = {"_local_scalar_dense", "is_nonzero", "nonzero", "masked_select", "_unique2", "unique_dim",
                 "unique_consecutive", "equal", "repeat_interleave"}
INDEXING = {"__getitem__", "__setitem__", "index", "index_put", "index_put_", "_index_put_impl_"}


def _has_bool_index(args) -> bool:
    flat = [a for arg in args for a in (arg if isinstance(arg, (list, tuple)) else [arg])]
    return any(torch.is_tensor(a) and a.dtype in (torch.bool, torch.uint8) for a in flat[1:])


class HostReadRecorder:
    """Records host reads in its block: `calls` at the Python level (forward), `ops` at the aten level (forward
    and backward)."""

    def __init__(self):
        self.calls, self.ops = [], []
        recorder = self

        class Calls(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                name = getattr(func, "__name__", str(func))
                if name in HOST_READ_CALLS or (name in INDEXING and _has_bool_index(args)):
                    recorder.calls.append(name)
                return func(*args, **(kwargs or {}))

        class Ops(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func.overloadpacket.__name__
                if name in HOST_READ_OPS or (name in INDEXING and _has_bool_index(args)):
                    recorder.ops.append(str(func))
                return func(*args, **(kwargs or {}))

        self._modes = [Calls(), Ops()]

    def __enter__(self):
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc):
        for mode in reversed(self._modes):
            mode.__exit__(*exc)

    @property
    def reads(self) -> list[str]:
        return self.calls + self.ops


@pytest.fixture
def accelerator_path(monkeypatch):
    """The model's accelerator path on CPU tensors: it then treats them as device tensors (async checks only)."""
    on_accelerator_path(monkeypatch)


def on_accelerator_path(monkeypatch):
    for module in (modeling, layers):  # the model classes and the input checks each ask
        monkeypatch.setattr(module, "on_host", lambda tensor: False)


def collated(config, num_users=4, seed=0, **kwargs):
    collator = DataCollatorForMaskedPurchasePrediction.from_config(config, text_matrix(), seed=seed, **kwargs)
    return collator([make_feature(n, seed + n) for n in (3, 17, 40, 9, 25, 6)[:num_users]])


def training_step(model, batch):
    out = model(**batch)
    out.loss.backward()
    return out


# -- the step reads nothing on the host -------------------------------------------------------------------------------
@pytest.mark.parametrize("representation", ["mean", "cls"])
@pytest.mark.parametrize("contrastive", [0.0, 0.5])
def test_training_step_has_no_host_read_on_the_accelerator_path(accelerator_path, representation, contrastive):
    config = tiny_config(user_representation=representation, contrastive_weight=contrastive,
                         profile_weight=contrastive)  # the profile loss with the contrastive one
    config._attn_implementation = "sdpa"
    model = ShopperBertForMaskedPurchasePrediction(config).train()
    batch = collated(config)
    assert ("view_index" in batch) == (contrastive > 0)
    with HostReadRecorder() as recorder:
        out = training_step(model, batch)
    assert recorder.reads == []
    assert torch.isfinite(out.loss)
    assert model.shopperbert.embeddings.category_embeddings[0].weight.grad is not None


def test_recorder_catches_the_former_selection_and_the_cpu_checks():
    """Not vacuous: the boolean indexing of the former implementation, a batch without `masked_index`, and the CPU
    input checks (a host read there costs nothing) are all seen."""
    config = tiny_config()
    model = ShopperBertForMaskedPurchasePrediction(config).train()
    batch = collated(config)
    with HostReadRecorder() as former:
        reference_mpp(model, batch)[0].backward()
    assert "__getitem__" in former.calls and "aten.index.Tensor" in former.ops
    assert any("index_put" in op for op in former.ops)  # the backward of boolean indexing
    without_index = {k: v for k, v in batch.items() if k != "masked_index"}
    with HostReadRecorder() as recorder:
        model(**without_index)
    assert "nonzero" in recorder.calls
    with HostReadRecorder() as recorder:
        model(**batch)
    assert "tolist" in recorder.calls


@pytest.mark.parametrize("representation", ["mean", "cls"])
def test_training_step_runs_on_the_meta_device(representation):
    """On the meta device any value read or data-dependent shape raises: the whole step must still run."""
    config = tiny_config(user_representation=representation, contrastive_weight=0.5, hidden_dropout_prob=0.1)
    config._attn_implementation = "sdpa"
    model = ShopperBertForMaskedPurchasePrediction(config).train().to("meta")
    batch = {k: v.to("meta") for k, v in collated(config).items()}
    out = training_step(model, batch)
    assert out.loss.device.type == "meta"
    with pytest.raises(NotImplementedError, match="nonzero"):  # without the collator's index: one nonzero
        model(**{k: v for k, v in batch.items() if k != "masked_index"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("representation", ["mean", "cls"])
def test_training_step_has_no_cuda_synchronisation(representation):
    config = tiny_config(user_representation=representation, contrastive_weight=0.5)
    model = ShopperBertForMaskedPurchasePrediction(config).train().cuda()
    batch = {k: v.pin_memory().cuda(non_blocking=True) for k, v in collated(config).items()}
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        training_step(model, batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


# -- same numbers as the former boolean indexing ----------------------------------------------------------------------
def reference_mpp(model, batch):
    """The MPP loss of `ShopperBertForMaskedPurchasePrediction` as it was before `masked_index`: masked purchases
    selected by boolean indexing (a `nonzero`, i.e. a synchronisation on a GPU). Copied verbatim from that version."""
    outputs = model.shopperbert(batch["category_ids"], batch["date_ids"], batch["text_embeds"],
                                attention_mask=batch["attention_mask"], return_dict=True)
    positions = batch["masked_positions"].bool()
    labels = batch["labels"]
    if model.config.user_representation == "cls":
        cls_logits = model.mpp(outputs.last_hidden_state[:, 0])  # 9 x (B, V_k)
        row_of_masked = positions.nonzero(as_tuple=True)[0]  # (N,) batch row of each masked purchase
        logits = tuple(head_logits[row_of_masked] for head_logits in cls_logits)  # 9 x (N, V_k)
    else:
        logits = model.mpp(outputs.last_hidden_state[positions])  # 9 x (N, V_k), heads on masked tokens only
    target = labels[positions]  # (N, 9)
    losses, has_label = [], []
    for k, head_logits in enumerate(logits):
        valid = target[:, k].ne(-100)  # (N,)
        has_label.append(valid.any())
        summed = F.cross_entropy(head_logits.float(), target[:, k], ignore_index=-100, reduction="sum")
        losses.append(summed / valid.sum().clamp(min=1))
    head_losses = torch.stack(losses)  # (9,)
    has_label = torch.stack(has_label).to(head_losses.dtype)  # (9,)
    loss = (head_losses * has_label).sum() / has_label.sum().clamp(min=1.0)
    return loss, head_losses, logits


def _loss_and_gradients(model, run):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the same dropout masks in both runs
    loss, head_losses, logits = run()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), head_losses.detach(), [x.detach() for x in logits], grads


@pytest.mark.parametrize("representation", ["mean", "cls"])
@pytest.mark.parametrize("with_index", [True, False])
def test_same_loss_logits_and_gradients_as_boolean_indexing(representation, with_index):
    config = tiny_config(user_representation=representation, hidden_dropout_prob=0.1)
    model = ShopperBertForMaskedPurchasePrediction(config).train()
    batch = collated(config, num_users=6)
    if not with_index:
        batch.pop("masked_index")

    def new():
        out = model(**batch)
        return out.loss, out.head_losses, out.logits

    loss, head_losses, logits, grads = _loss_and_gradients(model, new)
    ref_loss, ref_head_losses, ref_logits, ref_grads = _loss_and_gradients(model, lambda: reference_mpp(model, batch))
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-6)
    assert torch.equal(loss, ref_loss) and torch.equal(head_losses, ref_head_losses)
    assert all(torch.equal(a, b) for a, b in zip(logits, ref_logits))
    assert grads.keys() == ref_grads.keys() and len(grads) > 20
    for name in grads:
        assert torch.equal(grads[name], ref_grads[name]), name


def test_collator_index_lists_masked_positions_row_major():
    config = tiny_config()
    batch = collated(config, num_users=5, num_views=2)
    flat = batch["masked_positions"].flatten()
    assert batch["masked_index"].dtype == torch.long
    assert torch.equal(batch["masked_index"], flat.nonzero().squeeze(-1))


# -- bad input --------------------------------------------------------------------------------------------------------
def test_collator_from_config_refuses_an_id_outside_its_vocabulary():
    config = tiny_config()  # category vocabularies of 9
    features = [make_feature(5, 0), make_feature(4, 1)]
    features[1]["category_3"] = [4, 5, 12, 6]
    collator = DataCollatorForMaskedPurchasePrediction.from_config(config, text_matrix())
    with pytest.raises(ValueError, match=r"feature 1: category_3 id 12 is outside its vocabulary \[0, 9\)"):
        collator(features)
    features[1]["category_3"] = [4, 5, -1, 6]
    with pytest.raises(ValueError, match=r"feature 1: category_3 id -1"):
        collator(features)
    DataCollatorForMaskedPurchasePrediction(text_matrix())(features)  # without vocab sizes: not checked here


def test_collator_refuses_vocab_sizes_of_the_wrong_length():
    with pytest.raises(ValueError, match="vocab_sizes must give 9 sizes"):
        DataCollatorForMaskedPurchasePrediction(text_matrix(), vocab_sizes=[9, 9, 9])


def test_cpu_model_still_names_the_field_and_value():
    config = tiny_config()
    batch = collated(config)
    batch["date_ids"][0, 1, 2] = 99  # day
    with pytest.raises(ValueError, match="day id 99 is outside its vocabulary"):
        ShopperBertForMaskedPurchasePrediction(config)(**batch)


def test_accelerator_path_asserts_ids_asynchronously(accelerator_path):
    """On a device the check is `torch._assert_async` (it raises at once only on the CPU, as here)."""
    config = tiny_config()
    batch = collated(config)
    batch["category_ids"][1, 2, 0] = 40
    with pytest.raises(RuntimeError, match="outside its vocabulary"):
        ShopperBertForMaskedPurchasePrediction(config)(**batch)


def test_masked_index_of_the_wrong_type_or_shape():
    config = tiny_config()
    model = ShopperBertForMaskedPurchasePrediction(config)
    batch = collated(config)
    for bad in (batch["masked_index"].int(), batch["masked_index"][None]):
        with pytest.raises(ValueError, match="masked_index must be a 1-D int64 tensor"):
            model(**{**batch, "masked_index": bad})


@pytest.mark.parametrize("on_accelerator", [False, True])
def test_masked_index_that_disagrees_with_the_positions(monkeypatch, on_accelerator):
    """E.g. a batch cut along its first dimension (DataParallel) cuts the flat index wrongly: refused."""
    if on_accelerator:
        on_accelerator_path(monkeypatch)
    config = tiny_config()
    model = ShopperBertForMaskedPurchasePrediction(config)
    batch = collated(config)
    index = batch["masked_index"]
    error = RuntimeError if on_accelerator else ValueError
    for bad in (index[:-1], index.flip(0), index + 1, torch.cat([index, index[-1:] + 10_000])):
        with pytest.raises(error, match="masked_index does not list the masked positions"):
            model(**{**batch, "masked_index": bad})
