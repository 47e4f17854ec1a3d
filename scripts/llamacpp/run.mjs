// Loads a GGUF file in llama.cpp (the prebuilt CPU binaries that npm `node-llama-cpp` installs) and prints JSON.
// It proves that a file exported by `QLoraNet export --format gguf` really runs in llama.cpp.
//
//   node run.mjs generate --model FILE.gguf --n 16 --prompt "The whale" [--prompt ...]
//       greedy continuation (argmax of the raw logits, no sampler) of each prompt, tokenized by llama.cpp itself
//       (BOS is added when the file's tokenizer.ggml.add_bos_token says so):
//       {"results": [{"prompt", "prompt_ids", "generated_ids", "text"}]}
//   node run.mjs generate --model FILE.gguf --n 16 --ids 1,722,982 [--ids ...]
//       the same with the prompt given as token ids (used as they are: no BOS is added)
//   node run.mjs tokenize --model FILE.gguf --prompt "text" [--prompt ...]
//       llama.cpp's own tokenization of each text, special tokens not parsed, no BOS: {"results": [{"prompt", "ids"}]}
//   node run.mjs loss --model FILE.gguf --ids-file ids.json
//       mean next-token cross-entropy of a token id sequence (a JSON array of ids, or an object with
//       "heldout_text_first_512_ids" such as models/tiny-llama-sotu/reference.json):
//       {"n_predicted", "mean_loss", "perplexity"}
//
// Both read raw logits through LlamaContextSequence.controlledEvaluate: per position, the logit of one chosen token,
// the max logit, and totalLogitWeight = sum(exp(logit - maxLogit)); so log p(t) = logit(t) - max - log(total).

import {readFileSync} from "node:fs";
import {getLlama} from "node-llama-cpp";

function parseArgs(argv) {
    const [command, ...rest] = argv;
    const args = {command, prompts: [], idPrompts: [], n: 16};
    for (let i = 0; i < rest.length; i++) {
        const key = rest[i];
        const value = rest[++i];
        if (value === undefined) throw new Error(`missing a value after ${key}`);
        if (key === "--model") args.model = value;
        else if (key === "--prompt") args.prompts.push(value);
        else if (key === "--ids") args.idPrompts.push(value.split(",").map(Number));
        else if (key === "--n") args.n = Number(value);
        else if (key === "--ids-file") args.idsFile = value;
        else if (key === "--context") args.contextSize = Number(value);
        else throw new Error(`unknown option ${key}`);
    }
    if (!["generate", "tokenize", "loss"].includes(command)) throw new Error("usage: node run.mjs generate|tokenize|loss --model FILE.gguf ...");
    if (!args.model) throw new Error("--model FILE.gguf is required");
    return args;
}

// For each input position: the argmax token, the logit of `target` (when given), and log-sum-exp of the logits.
function nextTokenStats(output, target) {
    const logits = output.next.logits;
    const [maxToken, maxLogit] = logits.entries().next().value;   // the map is sorted, highest first
    const logSumExp = maxLogit + Math.log(output.next.totalLogitWeight);
    return {argmax: maxToken, logProb: target === undefined ? undefined : logits.get(target) - logSumExp};
}

function logitRequest(token, target) {
    // includeTop: 1 brings the max logit (includeMax returns nothing in node-llama-cpp 3.22.1).
    const filter = {tokens: target === undefined ? [] : [target], includeTop: 1};
    return [token, {generateNext: {logits: {filter}, totalLogitWeight: true}}];
}

async function generate(sequence, model, prompt, n, ids) {
    const promptIds = ids ? [...ids] : Array.from(model.tokenize(prompt));
    if (!ids && model.tokens.bos != null && model.fileInfo.metadata?.tokenizer?.ggml?.add_bos_token !== false)
        promptIds.unshift(model.tokens.bos);
    await sequence.clearHistory();
    const generated = [];
    let input = promptIds.map((t, i) => i === promptIds.length - 1 ? logitRequest(t) : t);
    for (let step = 0; step < n; step++) {
        const out = await sequence.controlledEvaluate(input);
        const next = nextTokenStats(out[input.length - 1]).argmax;
        generated.push(next);
        input = [logitRequest(next)];
    }
    return {prompt, prompt_ids: promptIds, generated_ids: generated, text: model.detokenize(generated)};
}

async function meanLoss(sequence, ids) {
    await sequence.clearHistory();
    const input = ids.map((t, i) => i + 1 < ids.length ? logitRequest(t, ids[i + 1]) : t);
    const out = await sequence.controlledEvaluate(input);
    let sum = 0;
    for (let i = 0; i + 1 < ids.length; i++) sum -= nextTokenStats(out[i], ids[i + 1]).logProb;
    const mean = sum / (ids.length - 1);
    return {n_predicted: ids.length - 1, mean_loss: mean, perplexity: Math.exp(mean)};
}

function readIds(path) {
    const json = JSON.parse(readFileSync(path, "utf8"));
    const ids = Array.isArray(json) ? json : json.heldout_text_first_512_ids;
    if (!Array.isArray(ids) || ids.length < 2) throw new Error(`${path}: expected a JSON array of at least 2 token ids`);
    return ids;
}

async function main() {
    const args = parseArgs(process.argv.slice(2));
    const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
    const model = await llama.loadModel({modelPath: args.model});
    const ids = args.command === "loss" ? readIds(args.idsFile) : undefined;
    const longestIds = Math.max(0, ...args.idPrompts.map(p => p.length)) + args.n + 8;
    const contextSize = args.contextSize ?? Math.max(64, ids ? ids.length + 8 : Math.max(256, longestIds));
    // One thread: the model is small, and ggml's spinning worker threads slow a shared, busy CPU down ~15x.
    const context = await model.createContext({contextSize, batchSize: contextSize, sequences: 1, threads: 1});
    try {
        const sequence = context.getSequence();
        let result;
        if (args.command === "generate") {
            const results = [];
            for (const prompt of args.prompts) results.push(await generate(sequence, model, prompt, args.n));
            for (const ids of args.idPrompts) results.push(await generate(sequence, model, null, args.n, ids));
            result = {results};
        } else if (args.command === "tokenize") {
            result = {results: args.prompts.map(prompt => ({prompt, ids: Array.from(model.tokenize(prompt))}))};
        } else {
            result = await meanLoss(sequence, ids);
        }
        process.stdout.write(JSON.stringify(result) + "\n");
    } finally {
        await context.dispose();
        await model.dispose();
        await llama.dispose();
    }
}

main().catch(e => {
    process.stderr.write(`error: ${e.message}\n`);
    process.exit(1);
});
