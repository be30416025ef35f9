// An agent as Node users write them, unchanged for agentprobe: the openai and anthropic SDKs (built-in
// fetch), a raw fetch, axios and https.request. It knows nothing of the proxy: FAKE_URL is the provider.
import https from "node:https";
import Anthropic from "@anthropic-ai/sdk";
import axios from "axios";
import OpenAI from "openai";

const base = process.env.FAKE_URL;
const ask = (text) => ({ model: "gpt-4o-mini", messages: [{ role: "user", content: text }] });
const done = [];

const openai = new OpenAI({ apiKey: "sk-node-0123456789abcdefghij", baseURL: `${base}/v1`, maxRetries: 0 });
const reply = await openai.chat.completions.create(ask("openai sdk"));
done.push(`openai:${reply.choices[0].finish_reason}`);
const stream = await openai.chat.completions.create({ ...ask("openai sdk stream"), stream: true,
                                                      stream_options: { include_usage: true } });
let chunks = 0;
for await (const _chunk of stream) chunks++;
done.push(`openai-stream:${chunks > 2}`);

const anthropic = new Anthropic({ apiKey: "sk-ant-node-0123456789abcdefghij", baseURL: base, maxRetries: 0 });
const message = await anthropic.messages.create({ model: "claude-haiku-4-5", max_tokens: 50,
                                                  messages: [{ role: "user", content: "anthropic sdk" }] });
done.push(`anthropic:${message.stop_reason}`);

const raw = await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" },
                                                          body: JSON.stringify(ask("built-in fetch")) });
done.push(`fetch:${raw.status}`);

const viaAxios = await axios.post(`${base}/v1/chat/completions`, ask("axios"));
done.push(`axios:${viaAxios.status}`);

const status = await new Promise((resolve, reject) => {
  const body = JSON.stringify(ask("https.request"));
  const req = https.request(`${base}/v1/chat/completions`, { method: "POST",
    headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
    res.resume();
    res.on("end", () => resolve(res.statusCode));
  });
  req.on("error", reject);
  req.end(body);
});
done.push(`https.request:${status}`);
console.log(done.join(" "));
