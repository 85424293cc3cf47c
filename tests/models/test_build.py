import pytest
import torch
from PIL import Image
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from llava_ckd.models import PRESETS, build_preset, compose_vlm, load_vlm, set_trainable
from llava_ckd.models.build import ModelError, looks_local
from llava_ckd.models.tokenizer import IMAGE_TOKEN


def image_prompt_inputs(processor, colour=(200, 10, 10)):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(text=text, images=Image.new("RGB", (32, 32), colour), return_tensors="pt")


@pytest.mark.parametrize("preset", PRESETS)
def test_saved_preset_reloads_in_plain_transformers_with_identical_logits(preset, tokenizer, tmp_path):
    model, processor = build_preset(preset, tokenizer)
    inputs = image_prompt_inputs(processor)
    assert (inputs["input_ids"] == model.config.image_token_index).sum() == model.config.image_seq_length
    logits = model(**inputs).logits

    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    reloaded_processor = AutoProcessor.from_pretrained(tmp_path)
    reloaded_inputs = image_prompt_inputs(reloaded_processor)
    assert torch.equal(reloaded_inputs["input_ids"], inputs["input_ids"])
    assert torch.equal(reloaded(**reloaded_inputs).logits, logits)


def test_presets_grow_in_llm_size_and_share_the_vision_tower(tokenizer):
    sizes = {}
    vision_shapes = set()
    for preset in ("tiny-student", "tiny-ta", "tiny-teacher"):
        model, _ = build_preset(preset, tokenizer)
        sizes[preset] = sum(p.numel() for p in model.model.language_model.parameters())
        vision_shapes.add(tuple((n, p.shape) for n, p in model.model.vision_tower.named_parameters()))
    assert sizes["tiny-student"] < sizes["tiny-ta"] < sizes["tiny-teacher"]
    assert len(vision_shapes) == 1


def test_unknown_preset_is_refused_with_the_known_names(tokenizer):
    with pytest.raises(ValueError, match="tiny-student"):
        build_preset("tiny-giant", tokenizer)


def test_set_trainable_freezes_exactly_the_other_parts(tokenizer):
    model, _ = build_preset("tiny-student", tokenizer)
    counts = set_trainable(model, ["projector"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.multi_modal_projector.") for n in trainable)
    assert counts["vision"] == counts["llm"] == 0
    assert counts["projector"] == sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    with pytest.raises(ValueError, match="unknown model parts"):
        set_trainable(model, ["decoder"])


@pytest.fixture
def vision_and_llm_checkpoints(tokenizer, tmp_path):
    torch.manual_seed(0)
    vision_dir, llm_dir = tmp_path / "siglip", tmp_path / "qwen2"
    vision = SiglipVisionModel(SiglipVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                                  num_hidden_layers=3, num_attention_heads=2))
    vision.save_pretrained(vision_dir)
    SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(vision_dir)
    llm = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer) + 8, hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                       tie_word_embeddings=False))
    llm.save_pretrained(llm_dir)
    tokenizer.save_pretrained(llm_dir)
    return vision, vision_dir, llm_dir


def test_compose_keeps_both_checkpoints_and_adds_a_fresh_gelu_projector(vision_and_llm_checkpoints):
    vision, vision_dir, llm_dir = vision_and_llm_checkpoints
    model, processor = compose_vlm(vision_dir, llm_dir, vision_feature_layer=-2)

    for name, tensor in vision.state_dict().items():
        assert torch.equal(model.model.vision_tower.state_dict()[name], tensor)
    assert model.config.vision_feature_select_strategy == "full"  # SigLIP: no CLS token to drop
    assert model.config.vision_feature_layer == -2
    assert model.config.projector_hidden_act == "gelu"
    assert processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) == model.config.image_token_index

    llm = AutoModelForCausalLM.from_pretrained(llm_dir)
    ids = processor.tokenizer("What colour is it?", return_tensors="pt")["input_ids"]
    assert torch.allclose(model(input_ids=ids).logits, llm(input_ids=ids).logits, atol=1e-6)

    inputs = image_prompt_inputs(processor)
    assert (inputs["input_ids"] == model.config.image_token_index).sum() == 16  # (32 / 8)^2 patches
    assert model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]


@pytest.mark.parametrize("name", ["./no/such/dir", "../no-such-dir", "/no/such/dir", "~/no-such-llava-ckd-dir",
                                  "runs/student/final", "existing/missing"])
def test_a_missing_local_model_folder_is_named_not_sent_to_the_hub(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing").mkdir()
    with pytest.raises(FileNotFoundError, match=f"^model folder not found: {name}$"):
        load_vlm(name)


def test_hub_ids_are_not_taken_for_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not looks_local("Qwen/Qwen2.5-7B-Instruct") and not looks_local("gpt2")
    assert looks_local("./gpt2") and looks_local("a/b/c")


def test_a_folder_without_config_json_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"model folder {tmp_path} has no config.json"):
        load_vlm(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelError, match="model path is not a folder: .*weights.bin"):
        load_vlm(tmp_path / "weights.bin")


def test_truncated_weights_are_named(tokenizer, tmp_path):
    model, processor = build_preset("tiny-student", tokenizer)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelError, match=f"model weights unreadable \\(truncated or corrupt safetensors\\): "
                                         f"{weights}: Error while deserializing header"):
        load_vlm(tmp_path)


def test_composition_and_vision_init_name_their_missing_checkpoint(vision_and_llm_checkpoints, tokenizer, tmp_path):
    _, vision_dir, llm_dir = vision_and_llm_checkpoints
    with pytest.raises(FileNotFoundError, match=f"vision model folder not found: {tmp_path}/absent"):
        compose_vlm(tmp_path / "absent", llm_dir)
    with pytest.raises(FileNotFoundError, match="LLM folder not found: ./no/llm"):
        compose_vlm(vision_dir, "./no/llm")
    with pytest.raises(FileNotFoundError, match=f"vision_init folder not found: {tmp_path}/tower"):
        build_preset("tiny-student", tokenizer, vision_init=tmp_path / "tower")
