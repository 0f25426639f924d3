"""Config loading, locking, overrides and validation errors (all before any device work)."""

import pytest

from jaxmm import cli
from jaxmm import config as config_lib


def test_misspelt_override_names_closest_keys():
    with pytest.raises(cli.UsageError) as e:
        cli.load_config("configs/toy.py:tiny", ["optimizer.lerning_rate=1"])
    assert "optimizer.lerning_rate" in str(e.value)
    assert "optimizer.learning_rate" in str(e.value)


def test_override_parses_literals_and_keeps_types():
    c = cli.load_config(
        "configs/toy.py:tiny", ["num_steps=70", "optimizer.learning_rate=1", "profile_steps=(2,3)"]
    )
    assert c.num_steps == 70
    assert isinstance(c.optimizer.learning_rate, float) and c.optimizer.learning_rate == 1.0
    assert tuple(c.profile_steps) == (2, 3)


def test_override_wrong_type_names_field():
    with pytest.raises(cli.UsageError, match=r"config.num_steps: cannot set 'abc'"):
        cli.load_config("configs/toy.py:tiny", ["num_steps=abc"])


def test_unknown_variant_and_missing_file():
    with pytest.raises(cli.UsageError, match=r"unknown config variant 'tinny'.*'tiny'"):
        cli.load_config("configs/toy.py:tinny", [])
    with pytest.raises(cli.UsageError, match=r"configs/nope.py' does not exist"):
        cli.load_config("configs/nope.py", [])
    with pytest.raises(cli.UsageError, match="missing --config"):
        cli.load_config(None, [])


def test_locked_config_rejects_new_keys():
    c = config_lib.load_config_file("configs/toy.py:tiny")
    with pytest.raises(AttributeError):
        c.lerning_rate = 1.0


@pytest.mark.parametrize(
    "override, field",
    [
        ("num_steps=0", "config.num_steps"),
        ("grad_accum_steps=3", "config.batch_size"),  # 32 not divisible by 3
        ("optimizer.name='adam2'", "config.optimizer.name"),
        ("optimizer.warmup_steps=10000", "config.optimizer.warmup_steps"),
        ("precision.compute_dtype='fp8'", "config.precision.compute_dtype"),
        ("mesh.fsdp=-1", "config.mesh"),  # two -1 axes
        ("profile_steps=(1,)", "config.profile_steps"),
        ("checkpoint.keep=0", "config.checkpoint.keep"),
    ],
)
def test_validation_names_the_field(override, field):
    with pytest.raises(cli.UsageError, match=field.replace(".", r"\.")):
        cli.load_config("configs/toy.py:tiny", [override])


def test_mesh_vs_device_count():
    c = config_lib.load_config_file("configs/toy.py:tiny")
    with c.unlocked():
        c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 3, 1
    with pytest.raises(ValueError, match=r"config.mesh: .* multiply to 3, but there are 8"):
        config_lib.validate(c, num_devices=8)
    with c.unlocked():
        c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 3
    with pytest.raises(ValueError, match="not divisible"):
        config_lib.validate(c, num_devices=8)
    with c.unlocked():
        c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
        c.batch_size = 4
    with pytest.raises(ValueError, match=r"data\*fsdp=8"):
        config_lib.validate(c, num_devices=8)


def test_parse_arg_variant_options_and_flags():
    parse = lambda arg: config_lib.parse_arg(
        arg, variants=("tiny", "large"), default="tiny", res=0, runlocal=False
    )
    assert parse(None).to_dict() == {"variant": "tiny", "res": 0, "runlocal": False}
    assert parse("large,res=256,runlocal").to_dict() == {
        "variant": "large",
        "res": 256,
        "runlocal": True,
    }
    assert parse("res=128").variant == "tiny" and parse("res=128").res == 128
    with pytest.raises(ValueError, match="unknown config variant 'huge'"):
        parse("huge")
    with pytest.raises(ValueError, match="unknown config argument 'rez'.*Did you mean 'res'"):
        parse("large,rez=1")
    with pytest.raises(ValueError, match="res='x': expected a int"):
        parse("large,res=x")
    with pytest.raises(ValueError, match="'res' needs a value"):
        parse("large,res")


def test_lrm4d_curriculum_stage_is_an_argument():
    c = config_lib.load_config_file("configs/lrm4d.py:base,res=256")
    assert c.data.image_size == 256 and c.init_from == "runs/lrm4d_base"
    with pytest.raises(ValueError, match="res=128"):
        config_lib.load_config_file("configs/lrm4d.py:base,res=128")
