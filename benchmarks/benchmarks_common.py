"""Inputs shared by the GPU scripts."""

# Chat layout, 24 tokens: BOS, user header, <|image|> (128256 in the model input), 14 text tokens,
# <|eot_id|>, and the start of the assistant header.
PROMPT_IDS = (
    [128000, 128006, 882, 128007, 271, 128256]
    + [3923, 374, 304, 420, 2217, 30, 17855, 433, 304, 832, 11914, 13, 5321, 0]
    + [128009, 128006, 78191, 128007]
)
