"""A development set of real Hugging Face Trainer logs: the labelling rule and its script.

The third-party ``trainer_state.json`` files are not committed; ``sources.jsonl`` lists them
(repository, path, commit) with their labels, and ``label.py`` rebuilds the labels from a
directory where they have been downloaded. The rule is written out in ``LABELING.md``.
"""

# The script runs as ``python -m evals.real_logs.label``; importing it here would load it twice.
__all__: list[str] = []
