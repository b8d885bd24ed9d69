"""Guards: checks that refuse bad input or stop a run, with errors that name the problem and the fix.

`non_finite` (NaN/inf refused in config fields, a run stopped at its first non-finite loss, reward or gradient) and
`trainer_inputs` (datasets, reward functions and prompts handed to the trainer).
"""
