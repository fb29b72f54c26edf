"""The seeds' own agent loops, re-typed from their published code for the protocol comparison tests
(tests/test_protocols.py) and experiments/seed_protocols.py. Nothing here is imported by the harness.

- ``react_webthink``: ``webthink`` and ``llm`` of ReAct's ``hotpotqa.ipynb``, with ``WikiEnv.step``
  (``wikienv.py``) and ``HotPotQAWrapper.step`` (``wrappers.py``), github.com/ysymyth/ReAct.
- ``fireact_run``: ``run`` and ``prune_thought`` of FireAct's ``generation.py``, ``LlamaInterface`` and
  ``KeywordsStoppingCriteria`` of its ``models/llama.py``, ``call_tools`` of ``tools/__init__.py``,
  github.com/anchen1011/FireAct.

Changed, and only this, so that they run here offline and on the same environment as ours:
- ReAct's ``llm`` is text-davinci-002 through the OpenAI API (temperature 0, 100 tokens, the stop cut
  off); here the embedded model's greedy ``generate`` with the same budget, cut at the first stop string.
- FireAct's model is loaded in fp32 (its code: ``load_in_4bit=True``), on the CPU.
- Both may start each call from the few-shot prompt's cached keys/values (``PrefixCache``).
- The environment answers are this project's offline tools: WikiEnv's ``search_step`` / lookup list are
  the offline Wikipedia tool's search and lookup (``No more results.`` given its newline as wikienv
  writes it); FireAct's ``search()`` is the offline Google cache (SerpAPI's null -> None, a miss -> our
  "No cached Google result" line, where FireAct would have gone live).
- FireAct's ``run`` also returns the final prompts of the episodes it never finished (it drops them),
  and keeps each finished episode's answer in its info.
- The ReAct notebook crashes on an empty repaired action (``action[0]``); here it steps "" (as ours does).

Both seeds are MIT licensed:

MIT License. Copyright (c) 2023 Shunyu Yao (ReAct); Copyright (c) 2023 Baian Chen (Andrew) (FireAct).

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction, including
without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial
portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER
IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE
USE OR OTHER DEALINGS IN THE SOFTWARE.
"""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList

device = torch.device("cpu")


def load_model(modelpath):
    tokenizer = AutoTokenizer.from_pretrained(modelpath)
    model = AutoModelForCausalLM.from_pretrained(modelpath, dtype=torch.float32)
    model.eval()
    return tokenizer, model


class PrefixCache:
    """The few-shot prompt's keys/values, computed once and copied into every call that starts with it
    (what an API server's prefix cache does): each call then runs only its own ~100-600 tokens, not the
    ~2,000 of the prompt. Not in the seeds' code; the text generated is the same up to fp32 rounding."""

    def __init__(self, tokenizer, model, text):
        from transformers import DynamicCache

        self.ids = tokenizer(text)["input_ids"] if text else []
        self.cache = DynamicCache(config=model.config)
        if self.ids:
            with torch.inference_mode():
                model(input_ids=torch.tensor([self.ids]), past_key_values=self.cache, use_cache=True)

    def kwargs(self, input_ids) -> dict:
        import copy

        ids = input_ids[0].tolist()
        n = 0
        while n < min(len(ids) - 1, len(self.ids)) and ids[n] == self.ids[n]:
            n += 1
        if n == 0:
            return {}
        cache = copy.deepcopy(self.cache)
        if n < len(self.ids):
            cache.crop(n - len(self.ids))  # a negative count: drop that many tokens from the end
        return {"past_key_values": cache}


# ============================ ReAct: hotpotqa.ipynb, wikienv.py, wrappers.py ============================
def make_react_llm(tokenizer, model, prefix: PrefixCache = None):
    """The notebook's ``llm(prompt, stop)``: greedy, 100 tokens, the text before the first stop."""
    @torch.inference_mode()
    def llm(prompt, stop=["\n"]):
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=100,
                             **(prefix.kwargs(ids) if prefix else {}),
                             do_sample=False, stop_strings=stop, tokenizer=tokenizer,
                             pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(out[0][ids.shape[1]:], skip_special_tokens=True)
        cuts = [text.find(s) for s in stop if s in text]
        return text[:min(cuts)] if cuts else text
    return llm


class OfflineWikiEnv:
    """WikiEnv + HotPotQAWrapper, stepping as wikienv.py / wrappers.py do; search and lookup answered
    by the offline Wikipedia tool."""

    def __init__(self, tool, task):
        self.tool, self.task = tool, task

    def reset(self, idx):
        self.session = self.tool.session()
        self.answer, self.idx, self.steps = None, idx, 0
        self.obs = "Interact with Wikipedia using search[], lookup[], and finish[].\n"
        return f"Question: {self.task[idx]}"

    def step(self, action):  # WikiEnv.step
        reward = 0
        done = False
        action = action.strip()
        if self.answer is not None:  # already finished
            done = True
            return self.obs, reward, done, self._get_info()
        if action.startswith("search[") and action.endswith("]"):
            entity = action[len("search["):-1]
            self.obs = self.session.act("search", entity).text
        elif action.startswith("lookup[") and action.endswith("]"):
            keyword = action[len("lookup["):-1]
            self.obs = self.session.act("lookup", keyword).text
            if self.obs == "No more results.":
                self.obs = "No more results.\n"
        elif action.startswith("finish[") and action.endswith("]"):
            answer = action[len("finish["):-1]
            self.answer = answer
            done = True
            self.obs = f"Episode finished, reward = {reward}\n"
        elif action.startswith("think[") and action.endswith("]"):
            self.obs = "Nice thought."
        else:
            self.obs = "Invalid action: {}".format(action)
        self.steps += 1
        obs, info = self.obs, self._get_info()
        # HotPotQAWrapper.step
        reward = self.get_reward(info)
        if done:
            obs = f"Episode finished, reward = {reward}\n"
            info.update({"gt_answer": self.task.gold(self.idx), "question_idx": self.idx})
            r, score = self.task.evaluate(self.idx, info["answer"])
            info.update({"reward": score["em"], "em": score["em"], "f1": score["f1"]})
        return obs, reward, done, info

    def _get_info(self):
        return {"steps": self.steps, "answer": self.answer}

    def get_reward(self, info):
        if info["answer"] is not None:
            return int(self.task.evaluate(self.idx, info["answer"])[1]["em"])
        return 0


def react_webthink(idx, llm, env, prompt):
    """hotpotqa.ipynb's ``webthink``: returns (r, info) with info["traj"] the whole prompt."""
    question = env.reset(idx=idx)
    prompt += question + "\n"
    n_calls, n_badcalls = 0, 0
    for i in range(1, 8):
        n_calls += 1
        thought_action = llm(prompt + f"Thought {i}:", stop=[f"\nObservation {i}:"])
        try:
            thought, action = thought_action.strip().split(f"\nAction {i}: ")
        except:  # noqa: E722 (the notebook's)
            n_badcalls += 1
            n_calls += 1
            thought = thought_action.strip().split('\n')[0]
            action = llm(prompt + f"Thought {i}: {thought}\nAction {i}:", stop=[f"\n"]).strip()
        obs, r, done, info = env.step(action[:1].lower() + action[1:])  # the notebook: action[0].lower()
        obs = obs.replace('\\n', '')
        step_str = f"Thought {i}: {thought}\nAction {i}: {action}\nObservation {i}: {obs}\n"
        prompt += step_str
        if done:
            break
    if not done:
        obs, r, done, info = env.step("finish[]")
    info.update({'n_calls': n_calls, 'n_badcalls': n_badcalls, 'traj': prompt})
    return r, info


# ============================ FireAct: generation.py, models/llama.py, tools ============================
class KeywordsStoppingCriteria(StoppingCriteria):
    def __init__(self, stop_words: list, tokenizer):
        self.keywords = [torch.LongTensor(tokenizer.encode(w)[-5:]).to(device) for w in stop_words]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> bool:
        for k in self.keywords:
            if len(input_ids[0]) >= len(k) and torch.equal(input_ids[0][-len(k):], k):
                return True
        return False


class LlamaInterface:
    def __init__(self, tokenizer, model, prefix: PrefixCache = None):
        self.tokenizer, self.model = tokenizer, model  # loaded by load_model (fp32, not 4-bit)
        self.prefix = prefix

    @torch.inference_mode()
    def llama(self, prompt, temperature=1, max_tokens=1000, stop=None):
        encoded_prompt = self.tokenizer(prompt, return_tensors="pt").to(device)
        stop_criteria = StoppingCriteriaList([KeywordsStoppingCriteria(stop, self.tokenizer)]) if stop else None
        generated_ids = self.model.generate(
            input_ids=encoded_prompt["input_ids"],
            attention_mask=encoded_prompt["attention_mask"],
            **(self.prefix.kwargs(encoded_prompt["input_ids"]) if self.prefix else {}),
            max_new_tokens=max_tokens,
            do_sample=False,
            num_return_sequences=1,
            stopping_criteria=stop_criteria,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        ).to(device)
        decoded_output = self.tokenizer.batch_decode(generated_ids, skip_special_tokens=True)
        if stop:
            for ending in stop:
                if decoded_output[0].endswith(ending):
                    decoded_output[0] = decoded_output[0][:-len(ending)]
                    break
        return decoded_output[0]

    def generate_responses_from_llama(self, prompts, temperature=1, max_tokens=1000, n=1, stop=None):
        responses = []
        for i in range(n):
            for prompt in prompts:
                decoded_output = self.llama(prompt, temperature, max_tokens, stop)
                decoded_output = decoded_output[len(prompt):]
                if decoded_output.startswith("Thought: "):
                    decoded_output = decoded_output[len("Thought: "):]
                responses.append(decoded_output)
        return responses


class FireActHotpotQA:
    """tasks/hotpotqa.py's HotpotQATask (``__getitem__``, ``evaluate``) over this project's data: its EM is
    a bool, so the finish observation reads ``reward = True``."""

    def __init__(self, task):
        self.task = task

    def __getitem__(self, idx):
        return self.task[idx]

    def evaluate(self, idx, answer):
        from tasks.metrics import f1_score, normalize_answer

        pred = normalize_answer(answer)
        gt = normalize_answer(self.task.gold(idx))
        em = (pred == gt)
        f1 = f1_score(pred, gt)[0]
        return em, {'reward': em, 'em': em, 'f1': f1, 'gt': gt, 'pred': pred}


def make_call_tools(google_tool):
    """tools/__init__.py's call_tools with tools/search.py's search() answered by the offline cache."""
    def search(question):
        obs = google_tool.search(question)
        return None if obs.empty else obs.text

    def call_tools(tool_name, tool_input):
        if tool_name == "search":
            return search(tool_input)
        else:
            raise ValueError("Unknown tool name: {}".format(tool_name))
    return call_tools


def prepare_prompt(question):
    return f"Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{question}\n\n### Response:\n"


def prune_thought(prompt):
    if prompt.startswith("Thought:"):
        return prompt[len("Thought:"):].strip()
    return prompt


def fireact_run(task, idxs, gpts, call_tools, fewshot_prompt="", evaluate=True, alpaca_format=False,
                question_prefix=''):
    """generation.py's ``run`` (text formats; its tool threads run one by one, as their order does not
    matter). Returns (rs, infos, unfinished) where unfinished maps the dropped episodes to their prompts."""
    questions = [question_prefix + task[idx] for idx in idxs]
    prompts = [fewshot_prompt + question + "\n" for question in questions]
    if alpaca_format:
        prompts = [prepare_prompt(q.rstrip()) for q in questions]
    rs, infos = {}, {}
    iteration = 0
    while iteration < 11:
        iteration += 1
        reflection = ""
        thought_action_pairs = gpts([prompt + f"Thought:{reflection}" for prompt in prompts], stop=[f"\nObservation:"])
        for _ in range(5):
            bad_ids = [i for i, pair in enumerate(thought_action_pairs) if "Action: " not in pair]
            if not bad_ids:
                break
            bad_prompts = [prompts[i] for i in bad_ids]
            bad_pairs = gpts(bad_prompts, stop=None)
            for i, pair in zip(bad_ids, bad_pairs):
                thought_action_pairs[i] = pair
                if _ == 4 and "Action: " not in pair:
                    thought_action_pairs[i] = "Thought: failed\nAction: finish[]"

        thoughts, actions, obs, bad_ids, done_ids = [], [], [], [], []
        for i, thought_action in enumerate(thought_action_pairs):
            try:
                if "\nAction: " in thought_action.strip():
                    thought, action = thought_action.strip().split("\nAction: ")[:2]
                elif "Action: " in thought_action.strip():
                    thought = ""
                    action = thought_action[len("Action: "):]
                else:
                    thought = thought_action.split("\n")[0]
                    action = None
                    bad_ids.append(i)
                if len(reflection) > 0:
                    thought = reflection.strip() + " " + thought
            except:  # noqa: E722 (FireAct's)
                continue
            thoughts.append(thought)
            actions.append(action)
        if bad_ids:
            bad_prompts = [prompts[i] + f"Thought: {prune_thought(thoughts[i])}\nAction:" for i in bad_ids]
            bad_actions = gpts(bad_prompts, stop=[f"\nObservation:"])
            for i, bad_action in zip(bad_ids, bad_actions):
                actions[i] = bad_action.strip()

        threads = []
        results = {}
        for i, action in enumerate(actions):
            try:
                action_type, action_args = action.split('[')[:2]
                action_args = action_args[:-1]
            except:  # noqa: E722
                continue
            if "finish" not in action_type.lower():
                t = (action_type, action_args)
                threads.append((i, t))
        for i, t in threads:
            try:
                obs = call_tools(t[0], t[1])
            except Exception as exc:
                obs = '%r generated an exception: %s' % (t, exc)
            results[i] = obs

        for i, action in enumerate(actions):
            try:
                action_type, action_args = action.split('[')[:2]
                action_args = action_args[:-1]
                obs = results.get(i, "Observation: None")
            except:  # noqa: E722
                continue
            if "finish" in action_type.lower():
                if evaluate:
                    r, info = task.evaluate(idxs[i], action_args)
                else:
                    r, info = True, {}
                assert obs == "Observation: None", f"action {action} has observation {obs}"
                obs = f"Episode finished, reward = {r}"
                done_ids.append(i)
            prompts[i] += f"Thought: {prune_thought(thoughts[i])}\nAction: {action}\nObservation: {obs}\n"
            if "finish" in action_type.lower():
                traj = prompts[i][len(fewshot_prompt):]
                info.update({'prompt': fewshot_prompt, 'traj': traj, 'traj_by_line': traj.split('\n'),
                             'answer': action_args})  # 'answer': added here, for the comparison
                rs[idxs[i]] = r
                infos[idxs[i]] = info
        prompts = [prompts[i] for i in range(len(prompts)) if i not in done_ids]
        idxs = [idxs[i] for i in range(len(idxs)) if i not in done_ids]
        if not prompts:
            break
    unfinished = {idx: prompt[len(fewshot_prompt):] for idx, prompt in zip(idxs, prompts)}
    return rs, infos, unfinished
