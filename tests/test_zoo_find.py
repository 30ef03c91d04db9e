"""Finding an SAE for a model: sae-lens's directory as rows, filters, model-id parsing, suggestion tiers, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from saerl_zoo import hooks
from saerl_zoo.cli import main
from saerl_zoo.zoo import directory
from saerl_zoo.zoo.families import ModelName, parse_model_id
from saerl_zoo.zoo.find import suggest_saes


@pytest.mark.parametrize(
    ("model_id", "want"),
    [
        ("Qwen/Qwen2.5-Math-1.5B", ModelName("qwen2.5", "1.5b", "math", None)),
        ("Qwen/Qwen2.5-7B-Instruct", ModelName("qwen2.5", "7b", "", "instruct")),
        ("meta-llama/Llama-3.1-8B-Instruct", ModelName("llama-3.1", "8b", "", "instruct")),
        ("meta-llama/Meta-Llama-3-8B-Instruct", ModelName("llama-3", "8b", "", "instruct")),
        ("google/gemma-3-270m-it", ModelName("gemma-3", "270m", "", "instruct")),
        ("google/gemma-3-1b-pt", ModelName("gemma-3", "1b", "", None)),
        ("gemma-2-2b", ModelName("gemma-2", "2b", "", None)),
        ("gemma-2b-it", ModelName("gemma", "2b", "", "instruct")),
        # a fine-tune of Llama-3.1-8B: same checkpoint lineage, R1-distilled
        ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", ModelName("llama-3.1", "8b", "", "r1-distill")),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", ModelName("qwen2.5", "1.5b", "math", "r1-distill")),
        ("gpt2", ModelName("gpt2", "small", "", None)),
        ("gpt2-small", ModelName("gpt2", "small", "", None)),
        ("openai-community/gpt2-medium", ModelName("gpt2", "medium", "", None)),
        ("EleutherAI/pythia-70m-deduped", ModelName("pythia", "70m", "deduped", None)),
        ("Qwen/Qwen3-30B-A3B-Base", ModelName("qwen3", "30b-a3b", "", None)),
        ("qwen3-1.7b", ModelName("qwen3", "1.7b", "", None)),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", ModelName("smollm2", "135m", "", "instruct")),
        ("mistralai/Mistral-7B-Instruct-v0.2", ModelName("mistral", "7b", "v0.2", "instruct")),
        ("lmsys/vicuna-7b-v1.5-chat", ModelName("vicuna", "7b", "v1.5", "instruct")),
    ],
)
def test_parse_model_id(model_id, want):
    assert parse_model_id(model_id) == want


def test_parse_model_id_refuses_an_empty_id():
    with pytest.raises(ValueError, match="empty"):
        parse_model_id("org/ ")


# --------------------------------------------------------------------------- the directory


def _installed_yaml() -> dict:
    import sae_lens

    return yaml.safe_load((Path(sae_lens.__file__).parent / "pretrained_saes.yaml").read_text())


@pytest.fixture(scope="module")
def rows():
    return directory.sae_lens_rows()


def test_directory_lists_every_id_of_the_installed_yaml(rows):
    data = _installed_yaml()
    want = {f"sae-lens:{rel}/{sae['id']}": info["model"] for rel, info in data.items() for sae in info["saes"]}
    assert {r.name: r.model for r in rows} == want and len(rows) == len(want)
    assert set(rows[0].to_dict()) >= {"name", "kind", "model", "hook", "site", "layer", "d_sae", "source", "where", "problem"}
    assert {r.source for r in rows} == {"sae-lens"} and {r.kind for r in rows} == {"sae"}


def test_every_name_is_the_address_load_sae_takes(rows):
    """load_sae splits `sae-lens:RELEASE/ID` at the first '/': no release may contain one, and the lookup is offline."""
    from saerl_zoo.zoo.hub import sae_lens_lookup

    for r in rows:
        release, _, sae_id = r.name.removeprefix("sae-lens:").partition("/")
        assert release == r.release
        assert sae_lens_lookup(release, sae_id)["model"] == r.model


def test_every_known_hook_is_read_by_the_one_resolver(rows):
    """Each listed hook is what hooks.parse_hook reads at load time; none is refused except transcoders and pickles."""
    unreadable = []
    for r in rows:
        if r.hook is None:
            assert r.site is None and r.layer is None
            continue
        try:
            spec = hooks.parse_hook(r.hook)
        except hooks.HookError as err:
            assert r.refused in ("transcoder", "hook", "pickle") and r.problem, r.name
            if r.refused == "hook":
                unreadable.append(f"{r.name}: {err}")
            continue
        if r.refused == "transcoder":
            assert r.site is None and "transcoder" in r.problem, r.name
        else:
            assert (r.site, r.layer) == (spec.site, spec.layer), r.name
    assert unreadable == []
    transcoders = [r for r in rows if r.refused == "transcoder"]
    assert transcoders and all("transcoder" in r.problem for r in transcoders)


def test_pickled_formats_are_marked_refused(rows):
    from saerl_zoo.zoo.formats import pickle_converters

    data = _installed_yaml()
    pickled = {rel for rel, info in data.items() if info.get("conversion_func") in pickle_converters()}
    assert pickled and {r.release for r in rows if r.refused == "pickle"} == pickled


def test_listing_downloads_nothing(monkeypatch):
    import huggingface_hub
    from sae_lens.loading import pretrained_sae_loaders

    def refuse(*args, **kwargs):
        raise AssertionError(f"download attempted: {args} {kwargs}")

    for module, name in [(huggingface_hub, "hf_hub_download"), (huggingface_hub, "snapshot_download"),
                         (pretrained_sae_loaders, "hf_hub_download"), (pretrained_sae_loaders, "get_safetensors_tensor_shapes")]:
        monkeypatch.setattr(module, name, refuse)
    directory.sae_lens_rows.cache_clear()
    fresh = directory.sae_lens_rows()
    assert len(fresh) == sum(len(i["saes"]) for i in _installed_yaml().values())
    assert suggest_saes("google/gemma-3-270m-it")[0]
    result = CliRunner().invoke(main, ["find", "--model", "gpt2"])
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- filters


def test_model_filter_is_case_insensitive_exact_or_substring(rows):
    data = _installed_yaml()
    for query in ("google/gemma-3-270m-it", "GEMMA-3-270M-IT", "qwen"):
        want = sum(len(i["saes"]) for i in data.values() if query.lower() in i["model"].lower())
        assert want and len(directory.filter_rows(rows, model=query)) == want
    # the name without its org matches the TransformerLens-style ids sae-lens records
    assert directory.filter_rows(rows, model="gpt2-small")


@pytest.mark.parametrize(("query", "check"), [
    ("resid_post", lambda r: r.site == "resid_post"),
    ("resid_out", lambda r: r.site == "resid_post"),  # the catalog's word for the same tensor
    ("12", lambda r: r.layer == 12),
    ("blocks.12.hook_resid_post", lambda r: (r.site, r.layer) == ("resid_post", 12)),
    ("attn.hook_z", lambda r: "attn.hook_z" in r.hook),
])
def test_hook_filter(rows, query, check):
    found = directory.filter_rows(rows, hook=query)
    assert found and all(check(r) for r in found)
    assert len(found) == sum(1 for r in rows if r.hook is not None and check(r))


def test_hook_filter_matches_whole_dotted_parts_of_module_paths():
    """`model.layers.1.mlp` names block 1's MLP: never block 10's or 19's (a substring match picked those)."""
    def row(hook, site=None, layer=None):
        return directory.SaeRow(hook, "sae", "m", hook, site, layer, 8, "zoo", "r")

    rows = [row(h) for h in ("model.layers.1.mlp", "model.layers.1.mlp.down_proj", "model.layers.10.mlp", "model.layers.19.mlp",
                             "model.layers.1.mlp:mlp_out", "transformer.model.layers.1.mlp")]
    assert [r.hook for r in directory.filter_rows(rows, hook="model.layers.1.mlp")] == [
        "model.layers.1.mlp", "model.layers.1.mlp.down_proj", "model.layers.1.mlp:mlp_out", "transformer.model.layers.1.mlp"]
    assert [r.hook for r in directory.filter_rows(rows, hook="Layers.1.MLP.down_proj")] == ["model.layers.1.mlp.down_proj"]


def test_a_block_module_path_matches_that_blocks_output_only():
    """prepare --sae-hook is train-sae's --hook: `model.layers.12` is block 12's output, whatever name an SAE records it
    under, and neither block 12's input (block 11's output) nor its MLP."""
    def row(hook, site, layer):
        return directory.SaeRow(hook, "sae", "m", hook, site, layer, 8, "zoo", "r")

    rows = [row("model.layers.12:resid_out", "resid_post", 12), row("model.layers.12:resid_in", "resid_pre", 12),
            row("model.layers.12.mlp:mlp_out", "mlp_out", 12), row("blocks.12.hook_resid_post", "resid_post", 12),
            row("blocks.1.hook_resid_post", "resid_post", 1), row("model.layers.11:resid_out", "resid_post", 11)]
    want = ["model.layers.12:resid_out", "blocks.12.hook_resid_post"]
    for query in ("model.layers.12", "Model.Layers.12", "transformer.h.12", "model.layers.12:resid_out", "blocks.12.hook_resid_post"):
        assert [r.hook for r in directory.filter_rows(rows, hook=query)] == want, query
    assert [r.hook for r in directory.filter_rows(rows, hook="model.layers.12:resid_in")] == ["model.layers.12:resid_in"]
    assert [r.hook for r in directory.filter_rows(rows, hook="RESID_POST")] == [r.hook for r in rows if r.site == "resid_post"]


@pytest.mark.parametrize("query", ["model.layers.12", "transformer.h.12"])
def test_a_block_module_path_finds_sae_lens_saes_on_that_residual_stream(rows, query):
    found = directory.filter_rows(rows, hook=query)
    assert found and len(found) == sum(1 for r in rows if (r.site, r.layer) == ("resid_post", 12))


def test_zoo_rows_speak_the_resolvers_sites():
    zoo = directory.zoo_rows("sae")
    assert zoo and all(r.source == "zoo" and r.site == "resid_post" and r.hook.endswith(":resid_out") for r in zoo)
    assert directory.filter_rows(zoo, hook="resid_post") == zoo


# --------------------------------------------------------------------------- suggestions


def _tiers(model_id: str, **kwargs) -> dict[str, int]:
    found, _ = suggest_saes(model_id, **kwargs)
    return {s.row.name: s.tier for s in found}


def _release_tier(tiers: dict[str, int], release: str) -> set[int]:
    return {t for name, t in tiers.items() if name.startswith(f"sae-lens:{release}/")}


def test_gemma_3_270m_it_tiers():
    tiers = _tiers("google/gemma-3-270m-it")
    assert _release_tier(tiers, "gemma-scope-2-270m-it-res") == {1}
    assert _release_tier(tiers, "gemma-scope-2-270m-pt-res") == {2}  # base <-> instruct
    assert _release_tier(tiers, "gemma-scope-2-1b-pt-res") == {3}
    assert _release_tier(tiers, "gemma-scope-2-1b-pt-mlp") == set()  # a stitch carries only the residual stream
    assert not _release_tier(tiers, "gemma-scope-2b-pt-res")  # Gemma 2 is another family
    assert not any("transcoders" in name for name in tiers)  # refused unless asked for
    order = list(tiers.values())
    assert order == sorted(order)


def test_refused_saes_are_counted_and_shown_on_request():
    found, refused = suggest_saes("Qwen/Qwen2.5-7B")
    assert found == [] and refused == sum(len(i["saes"]) for i in _installed_yaml().values() if i["model"] == "Qwen/Qwen2.5-7B-Instruct")
    shown, none_left = suggest_saes("Qwen/Qwen2.5-7B", include_refused=True)
    assert none_left == 0 and {s.tier for s in shown} == {2} and all(s.row.problem for s in shown)


@pytest.mark.parametrize(("model_id", "release", "tier"), [
    ("meta-llama/Llama-3.1-8B-Instruct", "llama_scope_lxr_8x", 2),
    ("meta-llama/Llama-3.1-8B-Instruct", "llama_scope_r1_distill", 2),  # both fine-tunes of Llama-3.1-8B
    ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "llama_scope_r1_distill", 1),
    ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "llama_scope_lxr_8x", 2),
    ("gpt2", "gpt2-small-res-jb", 1),
    ("openai-community/gpt2-medium", "gpt2-small-res-jb", 3),
    ("EleutherAI/pythia-70m-deduped", "pythia-70m-deduped-res-sm", 1),
    ("google/gemma-2-2b-it", "gemma-scope-2b-pt-res", 2),
])
def test_tier_of_known_entries(model_id, release, tier):
    assert _release_tier(_tiers(model_id), release) == {tier}


def test_llama_3_and_3_1_are_different_families():
    assert not _release_tier(_tiers("meta-llama/Llama-3.1-8B-Instruct"), "llama-3-8b-it-res-jh")


def test_the_zoo_catalog_is_suggested_with_its_source():
    found, _ = suggest_saes("saerl-zoo/saerl-tiny-math-policy")
    assert found[0].tier == 1 and found[0].row.source == "zoo" and found[0].row.name == "saerl-tiny-math/sae"


def test_a_suggested_sae_loads_through_the_hook_resolver(monkeypatch, rows):
    """load_sae on a suggested name parses the SAE's recorded hook with hooks.parse_hook (no download: the reader is faked)."""
    from sae_lens import StandardSAE, StandardSAEConfig

    from saerl_zoo.zoo import api, formats

    found, _ = suggest_saes("gpt2", hook="blocks.8.hook_resid_pre")
    row = found[0].row

    def fake_release(release, sae_id, **kwargs):
        assert f"sae-lens:{release}/{sae_id}" == row.name
        sae = StandardSAE(StandardSAEConfig(d_in=8, d_sae=16))
        sae.cfg.metadata.hook_name = row.hook
        return sae

    monkeypatch.setattr(formats, "load_sae_lens_release", fake_release)
    spec = hooks.spec_of(api.load_sae(row.name))
    assert (spec.site, spec.layer) == (row.site, row.layer) == ("resid_pre", 8)


# --------------------------------------------------------------------------- CLI


def test_cli_find_and_list():
    runner = CliRunner()
    res = runner.invoke(main, ["find", "--model", "google/gemma-3-270m-it"])
    assert res.exit_code == 0, res.output
    assert res.output.index("1. exact model") < res.output.index("2. same model") < res.output.index("3. same family")
    assert "gemma-scope-2-270m-pt-res" in res.output and "transfer fit" in res.output
    data = json.loads(runner.invoke(main, ["find", "--model", "google/gemma-3-270m-it", "--hook", "12", "--json"]).output)
    assert data and all(d["layer"] == 12 for d in data) and {d["tier"] for d in data} == {1, 2, 3}

    res = runner.invoke(main, ["find", "--model", "nobody/nothing-3b"])
    assert res.exit_code == 0 and len(res.output.strip().splitlines()) == 1 and "saerl-zoo train-sae" in res.output

    res = runner.invoke(main, ["list", "--source", "sae-lens", "--model", "qwen"])
    assert res.exit_code == 0 and "qwen-scope-3-8b-base-w64k-l50/... (36 ids)" in res.output and "refused: pickle" in res.output
    listed = json.loads(runner.invoke(main, ["list", "--json", "--model", "gemma-3-270m-it", "--hook", "resid_post"]).output)
    assert listed and all(d["site"] == "resid_post" and "gemma-3-270m-it" in d["model"] for d in listed)
    res = runner.invoke(main, ["list"])
    assert res.exit_code == 0 and "saerl-tiny-math/sae" in res.output and "sae-lens:" not in res.output.split("more SAEs")[0]
    assert "SOURCE" in res.output and "zoo" in res.output
