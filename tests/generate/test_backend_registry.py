import pytest

from dataforge.errors import ConfigError, InputError
from dataforge.generate import SamplingParams, load_backend
from dataforge.generate.base import truncate_at_stop


def test_unknown_backend_suggests_the_nearest_name():
    with pytest.raises(ConfigError, match="did you mean 'vllm'"):
        load_backend("vlm", "tiny")


def test_model_path_that_does_not_exist_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_backend("transformers", str(tmp_path / "no-such-model"))


@pytest.mark.parametrize("kwargs, field", [
    ({"n": 0}, "sampling.n"), ({"temperature": -1}, "sampling.temperature"), ({"top_p": 0}, "sampling.top_p"),
    ({"max_tokens": 0}, "sampling.max_tokens"), ({"stop": ("",)}, "sampling.stop"),
])
def test_bad_sampling_params_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        SamplingParams(**kwargs)


def test_stop_cut_takes_the_earliest_stop_string():
    assert truncate_at_stop("a b\n\nc 16. d", ("16.", "\n\n")) == ("a b", True)
    assert truncate_at_stop("no stop here", ("16.",)) == ("no stop here", False)


def test_each_backend_owns_its_options_and_the_config_union_rejects_another_backends_keys(tmp_path):
    from dataforge.config.base import validate_config
    from dataforge.generate.hf_backend import TransformersOptions
    from dataforge.generate.vllm_backend import VLLMOptions
    from dataforge.selfinstruct.config import SelfInstructConfig

    seeds = {"seeds": "seeds.jsonl"}
    assert isinstance(SelfInstructConfig(**seeds).backend, TransformersOptions)
    cfg = validate_config(SelfInstructConfig, {**seeds, "backend": {"name": "vllm", "adapter": str(tmp_path),
                                                                    "lora_mode": "merged"}})
    assert isinstance(cfg.backend, VLLMOptions) and cfg.backend.kwargs(7)["seed"] == 7
    with pytest.raises(ConfigError) as err:
        validate_config(SelfInstructConfig, {**seeds, "backend": {"name": "openai", "adapter": "a", "batch_size": 2}})
    assert {"backend.openai.adapter: unknown key", "backend.openai.batch_size: unknown key"} <= set(err.value.problems)
    with pytest.raises(ConfigError, match="backend.vllm.lora_mode"):
        validate_config(SelfInstructConfig, {**seeds, "backend": {"name": "vllm", "lora_mode": "fast"}})
