import pytest

from chatbot.config import Config, load_config
from chatbot.errors import ConfigError


def test_defaults_without_file_or_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(env={})
    assert config == Config()
    assert not config.llm_enabled


def test_file_env_and_overrides_in_order(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[chatbot]\ntop_n = 3\npool_size = 20\nllm_base_url = "http://file"\n')
    config = load_config(f, env={"CHATBOT_POOL_SIZE": "25", "OPENAI_API_KEY": "sk-secret"},
                         overrides={"top_n": 7})
    assert (config.top_n, config.pool_size, config.llm_base_url) == (7, 25, "http://file")
    assert config.llm_api_key == "sk-secret"
    assert "sk-secret" not in repr(config)
    assert config.public_dict()["llm_api_key"] == "***"


def test_unknown_key_is_named_with_the_valid_ones(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("top_k = 3\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'top_k'.*valid keys are: .*top_n"):
        load_config(f, env={})


def test_wrong_type_names_key_and_type(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('top_n = "five"\n')
    with pytest.raises(ConfigError, match="'top_n' must be int"):
        load_config(f, env={})
    with pytest.raises(ConfigError, match="CHATBOT_POOL_SIZE.*'pool_size' must be int"):
        load_config(env={"CHATBOT_POOL_SIZE": "many"})


def test_unknown_env_key_and_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="CHATBOT_FLOOR: unknown key 'floor'"):
        load_config(env={"CHATBOT_FLOOR": "0.3"})
    with pytest.raises(ConfigError, match="chunk_overlap_tokens"):
        load_config(env={"CHATBOT_CHUNK_OVERLAP_TOKENS": "500"})
    with pytest.raises(ConfigError, match="'reranker_precision' must be 'fp32' or 'int8', got 'fp16'"):
        load_config(env={"CHATBOT_RERANKER_PRECISION": "fp16"})
    with pytest.raises(ConfigError, match="'rerank_depth' must be at least 1"):
        load_config(env={"CHATBOT_RERANK_DEPTH": "0"})


def test_invalid_toml_and_missing_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("top_n = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(f, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})
