"""How the real demo puts its task to a model: as chat turns, or as plain text.

    chat    a model whose file has a chat template (SmolLM2-135M-Instruct): the prompt is one user turn
            and the answer the assistant's turn, closed by its end-of-turn token; the data is chat .jsonl
            and the loss counts the assistant's tokens only.
    plain   a base model whose file has none (Gemma 3 270M): the text

                <bos>Q: Write the date 19.04.1958 in words.
                A: April 19, 1958<eos>

            as the library's prompt/completion .jsonl ("Q: ...\\nA:", " April 19, 1958"; the <bos>
            before the prompt as transformers' ``tokenizer(prompt)`` puts it, the <eos> after the
            completion), the loss on the completion and its <eos> only.

A base model has seen question/answer text like this in pretraining, so "Q:/A:" asks it the question
in the plainest way it can read; Gemma's chat turns (<start_of_turn>user ...) are the instruction-tuned
model's format, which the base was not trained to follow. Left to itself, a base model writes past its
answer's line (the next "Q: ..."), so a plain answer is the first line of what the model writes up to
<eos>: the same rule for the base and for the fine-tuned model, which learns to stop with <eos>.
"""

import numpy as np

from ..data import chat_dataset, jsonl_dataset
from ..data.dates import as_conversations
from ..data.text_files import start_tokens
from ..data.chat_answers import greedy_answers, greedy_chat_answers


class ChatFormat:
    name, asks, examples = "chat", "greedy chat answers", "conversations"
    window = 64  # one conversation (about 60 tokens with SmolLM2's default system turn) a window

    def lines(self, pairs):
        return as_conversations(pairs)

    def dataset(self, path, block_size, tokenizer):
        return chat_dataset(path, block_size, tokenizer)

    def answers(self, model, tokenizer, prompts, max_new_tokens):
        return greedy_chat_answers(model, tokenizer, prompts, max_new_tokens)


class PlainFormat:
    name, asks, examples = "plain", 'greedy answers to "Q: …\\nA:"', "examples"
    window = 40  # one example (about 35 tokens with Gemma's tokenizer) a window
    prompt = "Q: {}\nA:"

    def lines(self, pairs):
        return [{"prompt": self.prompt.format(p), "completion": " " + a} for p, a in pairs]

    def dataset(self, path, block_size, tokenizer):
        return jsonl_dataset(path, block_size, tokenizer)

    def answers(self, model, tokenizer, prompts, max_new_tokens):
        start = start_tokens(tokenizer)
        encoded = [np.array(start + tokenizer.encode(self.prompt.format(p)), np.int64) for p in prompts]
        texts = greedy_answers(model, tokenizer, encoded, tokenizer.eot_token_id, max_new_tokens)
        return [text.split("\n", 1)[0] for text in texts]


def task_format(tokenizer):
    """Chat turns where the tokenizer has a chat template, plain "Q:/A:" text where it has none."""
    return ChatFormat() if getattr(tokenizer, "chat_template", None) else PlainFormat()
