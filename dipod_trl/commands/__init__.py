"""The command layer: what turns argv and recipes into runs.

`cli` (the `dipod` commands), `recipe` and `recipe_help` (recipes parsed as TRL's parser does, and their help),
`resolved_values` (a recipe's resolved values, for shell launchers), `output_dir` (claiming the run folder),
`task_data` and `reward_resolution` (a task's datasets, a recipe's reward names), `model_setup` and `lora` (the model,
tokenizer and adapters a recipe names), `control` (`dipod control`), `demo` and `gpu_check`.

Nothing in the method (sampling, likelihood, objectives, trainer, models, tasks, evaluation, control) imports this
package; it imports them.
"""
