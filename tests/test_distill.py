import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modelpress.compress.base import PassContext
from modelpress.compress.distill import DistillConfig, distill, hinton_loss, kd_loss_fn, new_student
from modelpress.compress.distill_features import (
    attention_map_kl,
    attention_transfer,
    view_converter,
)
from modelpress.data import Split
from modelpress.errors import ConfigError
from modelpress.models import MODELS, create_model
from modelpress.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


# every registry model teaches and is taught at least once, mostly across families
CROSS_PAIRS = [
    ("vit", "resnet8"),
    ("resnet8", "gru"),
    ("transformer", "transformer"),
    ("lstm", "mobilenet"),
    ("mobilenet", "vit"),
    ("gru", "lstm"),
    ("vit", "transformer"),
]


def test_hinton_loss_known_values_and_gradient():
    t_logits = torch.tensor([[2.0, 0.0, -2.0]])
    s_logits = torch.zeros(1, 3, requires_grad=True)  # uniform student
    y = torch.tensor([0])
    temp, alpha = 2.0, 0.75
    loss = hinton_loss(s_logits, t_logits, y, temperature=temp, alpha=alpha)
    p_t = torch.softmax(t_logits / temp, -1)
    kl = (p_t * (p_t.log() - math.log(1 / 3))).sum()
    expected = alpha * temp**2 * kl + (1 - alpha) * math.log(3)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    # d/ds: alpha * T * (p_s^T - p_t^T) + (1 - alpha) * (p_s - onehot)
    uniform = torch.full((1, 3), 1 / 3)
    grad = alpha * temp * (uniform - p_t) + (1 - alpha) * (uniform - F.one_hot(y, 3))
    assert torch.allclose(s_logits.grad, grad, atol=1e-6)


def test_hinton_soft_term_is_zero_when_student_matches_teacher():
    logits = torch.randn(4, 10, requires_grad=True)
    loss = hinton_loss(logits, logits.detach(), torch.zeros(4, dtype=torch.long), alpha=1.0)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert logits.grad.abs().max() < 1e-6


def test_t_squared_keeps_the_soft_gradient_scale_at_high_temperature():
    # for large T the soft gradient tends to (z_s - z_t) / (classes * batch), whatever T is
    torch.manual_seed(0)
    t_logits = torch.randn(2, 5)
    t_logits -= t_logits.mean(-1, keepdim=True)
    grads = []
    for temp in (50.0, 200.0):
        s = torch.zeros(2, 5, requires_grad=True)
        hinton_loss(
            s, t_logits, torch.zeros(2, dtype=torch.long), temperature=temp, alpha=1.0
        ).backward()
        grads.append(s.grad)
    limit = (0 - t_logits) / (5 * 2)
    assert torch.allclose(grads[0], limit, rtol=0.1, atol=2e-3)  # error shrinks like 1/T
    assert torch.allclose(grads[1], limit, rtol=0.03, atol=5e-4)


def test_attention_terms_on_known_maps():
    model = torch.nn.Identity()
    a = torch.zeros(1, 2, 2, 2)
    a[0, :, 0, 0] = 1.0  # all energy top-left
    b = torch.zeros(1, 2, 2, 2)
    b[0, :, 1, 1] = 3.0  # all energy bottom-right, other scale
    assert attention_transfer(model, model, a, 5 * a).item() == pytest.approx(0.0, abs=1e-6)
    assert attention_transfer(model, model, a, b).item() == pytest.approx(math.sqrt(2), rel=1e-5)
    p = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])  # (B=1, heads=1, T=2, T=2)
    q = torch.tensor([[[[0.25, 0.75], [1.0, 0.0]]]])
    expected = (0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)) / 2  # row 2 matches
    assert attention_map_kl(p, q).item() == pytest.approx(expected, rel=1e-4)
    assert attention_map_kl(p, p).item() == pytest.approx(0.0, abs=1e-6)


def test_default_loss_is_hinton_only_and_leaves_the_teacher_alone(digits_image):
    torch.manual_seed(0)
    teacher = create_model("resnet8", width=0.5)
    student = create_model("resnet8", width=0.25).train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x, y = torch.as_tensor(digits_image.train.x[:16]), torch.as_tensor(digits_image.train.y[:16])
    loss = kd_loss_fn(teacher, DistillConfig())
    value = loss(student, x, y)
    value.backward()
    with torch.no_grad():
        expected = hinton_loss(student(x), teacher.eval()(x), y)
    assert value.item() == pytest.approx(expected.item(), rel=1e-4)  # BN train vs eval stats differ
    assert list(loss.parameters()) == [] and set(loss.last) == {"hinton"}
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_output_mismatch_is_a_clear_error(digits_image):
    teacher = create_model("resnet8", num_classes=10)
    student = create_model("resnet8", num_classes=5, width=0.25)
    x, y = torch.as_tensor(digits_image.train.x[:4]), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ConfigError, match=r"teacher ResNet8 outputs \(4, 10\) but student ResNet8"):
        kd_loss_fn(teacher, DistillConfig())(student, x, y)


def test_config_validation():
    with pytest.raises(ConfigError, match="temperature"):
        DistillConfig(temperature=0)
    with pytest.raises(ConfigError, match="alpha"):
        DistillConfig(alpha=1.5)
    with pytest.raises(ConfigError, match="hint_weight"):
        DistillConfig(hint_weight=-1)
    with pytest.raises(ConfigError, match="hints must be 'auto' or"):
        DistillConfig(hints=[["blocks.2"]])
    cfg = DistillConfig(hints=[["blocks.2", "blocks.1"]])  # JSON lists become tuples
    assert cfg.hints == (("blocks.2", "blocks.1"),)
    assert cfg.to_dict()["hints"] == [["blocks.2", "blocks.1"]]
    with pytest.raises(ConfigError, match="needs the student"):
        kd_loss_fn(create_model("resnet8"), DistillConfig(hint_weight=1.0))


def test_views_convert_into_each_other_exactly(digits_image, digits_sequence):
    img, seq = digits_image, digits_sequence
    to_image = view_converter(img.preprocessing, seq.preprocessing, img.input_spec, seq.input_spec)
    to_seq = view_converter(seq.preprocessing, img.preprocessing, seq.input_spec, img.input_spec)
    x_seq = torch.as_tensor(seq.test.x)
    assert torch.equal(to_image(x_seq), torch.as_tensor(img.test.x))
    assert torch.equal(to_seq(torch.as_tensor(img.test.x)), x_seq)
    other = {**img.preprocessing, "mean": [0.5]}
    with pytest.raises(ConfigError, match="not two views|same data"):
        view_converter(other, seq.preprocessing, img.input_spec, seq.input_spec)
    resized = {**img.preprocessing, "resize": 16}
    with pytest.raises(ConfigError, match="resize 16"):
        view_converter(resized, img.preprocessing, img.input_spec, img.input_spec)


@pytest.mark.parametrize(("teacher_name", "student_name"), CROSS_PAIRS)
def test_every_family_teaches_every_other_with_all_terms(
    teacher_name, student_name, digits_image, digits_sequence
):
    views = {"image": digits_image, "sequence": digits_sequence}
    t_data = views[MODELS[teacher_name].input_kinds[0]]
    s_data = views[MODELS[student_name].input_kinds[0]]
    torch.manual_seed(0)
    teacher = create_model(teacher_name, input_spec=t_data.input_spec, width=0.5)
    student = create_model(student_name, input_spec=s_data.input_spec, width=0.25).train()
    to_teacher = view_converter(
        t_data.preprocessing, s_data.preprocessing, t_data.input_spec, s_data.input_spec
    )
    x, y = torch.as_tensor(s_data.train.x[:8]), torch.as_tensor(s_data.train.y[:8])
    cfg = DistillConfig(hint_weight=1.0, attention_weight=1.0)
    loss = kd_loss_fn(teacher, cfg, student=student, example=x[:2], teacher_input=to_teacher)
    value = loss(student, x, y)
    value.backward()
    assert math.isfinite(value.item()) and set(loss.last) == {"hinton", "hint", "attention"}
    assert all(v > 0 for v in loss.last.values())  # every term is live on random models
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    if teacher_name in ("vit", "transformer") and student_name == teacher_name:
        assert loss.attention_pairs[0][0].endswith("attn_map")


def test_adapters_train_with_the_student_but_are_not_part_of_it(digits_image):
    torch.manual_seed(0)
    teacher = create_model("resnet8", width=0.5)
    student = create_model("resnet8", width=0.25)
    x = torch.as_tensor(digits_image.train.x[:2])
    cfg = DistillConfig(hint_weight=1.0, hints=[["blocks.1", "blocks.1"]])
    loss = kd_loss_fn(teacher, cfg, student=student, example=x)
    adapter = loss.adapters[0]
    assert (adapter.in_channels, adapter.out_channels) == (8, 16)  # student -> teacher width
    start = adapter.weight.detach().clone()
    keys = set(student.state_dict())
    train_x, train_y = digits_image.train.x[:256], digits_image.train.y[:256]
    small = dataclasses.replace(digits_image, train=Split(train_x, train_y))
    cfg_train = TrainConfig(epochs=1)
    train(student, small, cfg_train, progress=False, loss_fn=loss, extra_params=loss.parameters())
    assert not torch.equal(adapter.weight, start)
    assert set(student.state_dict()) == keys


def test_unknown_layer_names_fail_with_the_known_ones(digits_image):
    x = torch.as_tensor(digits_image.train.x[:2])
    cfg = DistillConfig(hint_weight=1.0, hints=[["blocks.9", "fc:input"]])
    with pytest.raises(ConfigError, match=r"layer 'blocks.9' is not in ResNet8.*stem"):
        kd_loss_fn(create_model("resnet8"), cfg, student=create_model("resnet8"), example=x)


def test_distill_pass_across_views(tmp_path, trained_checkpoint, digits_sequence):
    teacher_art, _ = trained_checkpoint("resnet8")
    student_art = new_student("gru", digits_sequence, tmp_path / "gru.safetensors", width=0.25)
    ctx = PassContext(data=digits_sequence, out_dir=tmp_path)
    cfg = DistillConfig(hint_weight=1.0, attention_weight=1.0)
    result = distill(teacher_art, student_art, cfg, ctx, TrainConfig(epochs=6, lr=1e-2))
    rec = result.record
    assert rec.name == "distill" and rec.after.params == rec.before.params
    assert rec.details["teacher_accuracy"] > 0.85
    assert rec.after.accuracy > max(0.3, rec.before.accuracy + 0.15)
    assert rec.details["hint_pairs"] == [["fc:input", "fc:input"]]
    assert rec.details["attention_pairs"] == [["blocks", "rnn"]]
    assert any("not saved" in n for n in rec.notes)
    from modelpress.checkpoint import load_checkpoint

    ckpt = load_checkpoint(result.artifact.path)
    assert ckpt.meta.lineage[-1]["stage"] == "distill"
    assert ckpt.meta.lineage[-1]["teacher"] == "resnet8"
    assert set(ckpt.model.state_dict()) == set(result.model.state_dict())
    logits = ckpt.model(torch.as_tensor(digits_sequence.test.x))
    acc = float((logits.argmax(1).numpy() == digits_sequence.test.y).mean())
    assert acc == pytest.approx(rec.after.accuracy)


def test_distill_refuses_students_of_other_classes(tmp_path, trained_checkpoint, digits_image):
    teacher_art, _ = trained_checkpoint("resnet8")
    fewer = type(digits_image)(
        digits_image.name,
        digits_image.train,
        digits_image.val,
        digits_image.test,
        labels=digits_image.labels[:5],
        input_spec=digits_image.input_spec,
        preprocessing=digits_image.preprocessing,
    )
    student_art = new_student("resnet8", fewer, tmp_path / "s.safetensors", width=0.25)
    ctx = PassContext(data=fewer, out_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"teacher resnet8 predicts 10 labels.*student resnet8 5"):
        distill(teacher_art, student_art, DistillConfig(), ctx, TrainConfig(epochs=1))


def test_kd_loss_unwraps_ddp(tmp_path, digits_image):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        teacher = create_model("resnet8", width=0.5)
        student = create_model("resnet8", width=0.25).train()
        x, y = torch.as_tensor(digits_image.train.x[:8]), torch.as_tensor(digits_image.train.y[:8])
        cfg = DistillConfig(hint_weight=1.0, attention_weight=1.0)
        loss = kd_loss_fn(teacher, cfg, student=student, example=x[:2])
        value = loss(torch.nn.parallel.DistributedDataParallel(student), x, y)
        value.backward()
        assert np.isfinite(value.item()) and set(loss.last) == {"hinton", "hint", "attention"}
    finally:
        dist.destroy_process_group()
