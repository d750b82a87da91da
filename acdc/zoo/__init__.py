"""The project's own small models, trained reproducibly on the CPU by the project's own code.

A zoo entry is a `Recipe` (`recipes.py`): the `HookedTransformerConfig` keyword arguments of
the model, the data it is trained on (a `ZooData`, `data.py`: its vocabulary, a training loss
on freshly drawn batches and a held-out evaluation), and the optimiser settings.
`train_model` (`training.py`) builds the tokenizer in code (`tokenizer.py`: a word-level
vocabulary, no download), trains the model from a seeded initialisation and writes a
checkpoint in the project's format (`config.json`, `model.safetensors`, `tokenizer.json`) that
`acdc.core.loading.load_model` reads. `evaluate_model` (`evaluation.py`) scores a checkpoint on
prompts it never saw in training.

The entries:

- `demo`: 2 layers with MLPs, a word-level IOI task with its own short word lists
  ("when mary and john went to the store , john gave a drink to" -> "mary"); a fixed set of
  name pairs never appears together in training (`demo_ioi.py`; its task file: `demo_task.py`).
- `ioi`: 3 layers with MLPs, trained on exactly the prompts of the bundled `tasks/ioi.yaml`
  generator (`acdc.core.generators`, its default templates, names, places and objects, both name
  orders); a fixed fifth of the name pairs is held out for evaluation (`generated.py`).
- `greater-than`: 2 layers with MLPs, trained on the bundled greater-than generator's prompts
  ("the war lasted from the year 17 32 to the year 17" -> a two-digit year above 32, taught
  with a soft target spread evenly over those years); a fixed set of nouns and of years is held
  out. Its tokenizer splits digit runs into pairs, so " 1732" is the two tokens "17" "32".
- `induction`: 2 attention-only layers of 4 heads (like the paper's redwood_attn_2l, smaller),
  trained with next-token loss at every position on random tokens in which spans repeat at
  widely varying distances (`repeated_spans.py`): three quarters of each batch are rows with
  one random block written twice in a row (block length, hence the distance between the
  copies, 3-31), the rest are the induction generator's sequences with three short spans each
  repeated at random offsets. A fixed copy distance teaches a positional shortcut instead of
  induction heads. Its evaluation reports every head's previous-token and induction score from
  its attention patterns.

Held-out splits depend on the recipe alone, not on the training seed. Training is
deterministic: the same recipe, seed and step count give bit-identical weights on the same
machine (CPU, a fixed thread count, deterministic algorithms).

>>> sorted(ZOO)
['demo', 'greater-than', 'induction', 'ioi']
"""

from acdc.zoo.data import ZooData, attention_patterns
from acdc.zoo.demo_ioi import DEMO_WORDS, IoiPrompt, IoiWords
from acdc.zoo.demo_task import demo_task, demo_task_prompts, demo_task_yaml
from acdc.zoo.evaluation import evaluate_model
from acdc.zoo.generated import GeneratedGreaterThan, GeneratedIoi
from acdc.zoo.recipes import ZOO, Recipe, get_recipe
from acdc.zoo.repeated_spans import RepeatedSpans
from acdc.zoo.tokenizer import build_tokenizer
from acdc.zoo.training import ProgressCallback, TrainingProgress, train_model

__all__ = [
    "DEMO_WORDS", "ZOO", "GeneratedGreaterThan", "GeneratedIoi", "IoiPrompt", "IoiWords",
    "ProgressCallback", "Recipe", "RepeatedSpans", "TrainingProgress", "ZooData",
    "attention_patterns", "build_tokenizer", "demo_task", "demo_task_prompts", "demo_task_yaml",
    "evaluate_model", "get_recipe", "train_model",
]
