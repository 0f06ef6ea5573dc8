"""Write a tiny random-weight Gemma 4 checkpoint for tests, CI and the smoke demo.

The checkpoint has the real directory layout of `google/gemma-4-26B-A4B-it`
(config.json, safetensors weights, tokenizer.json + tokenizer_config.json with
all of Gemma 4's special tokens, named as there, chat_template.jinja, the image
processor's config; with snapshot_layout, sharded weights with their index and a nested
processor_config.json, as the Hub snapshot has them) and the
real architecture in miniature: sliding + global layers (global K=V, wider heads), a MoE block
beside the shared MLP, and a vision tower with 3x3 pooling. It loads through
exactly the code that loads the real model. Its answers are noise.
"""

from __future__ import annotations

import json
from pathlib import Path

from inference.prompts import GEMMA4_SPECIAL_TOKENS, SYSTEM_PROMPT

SPECIAL_TOKENS = list(GEMMA4_SPECIAL_TOKENS)

# The chat template the tiny checkpoint ships as chat_template.jinja, written here from
# Gemma 4's published format for what the bot sends (no tools): <bos>; a system turn when
# the first message is a system one or thinking is on, opening with <|think|> and a
# newline when on, holding the first system message only (trimmed); every other message
# its own turn, a model turn following a model turn continuing it; a user message's parts
# in order, <|image|> for a photo and trimmed text, nothing between them; the generation
# prompt opens the model turn and, thinking off, adds an empty, closed thought.
CHAT_TEMPLATE = r"""
{%- set thinking = enable_thinking | default(false) -%}
{%- set rest = messages -%}
{{- bos_token -}}
{%- if thinking or messages[0]['role'] in ['system', 'developer'] -%}
    {{- '<|turn>system\n' -}}
    {%- if thinking -%}{{- '<|think|>\n' -}}{%- endif -%}
    {%- if messages[0]['role'] in ['system', 'developer'] -%}
        {{- messages[0]['content'] | trim -}}
        {%- set rest = messages[1:] -%}
    {%- endif -%}
    {{- '<turn|>\n' -}}
{%- endif -%}
{%- for message in rest -%}
    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
    {%- set continued = role == 'model' and loop.previtem is defined
                        and loop.previtem['role'] == 'assistant' -%}
    {%- if not continued -%}{{- '<|turn>' + role + '\n' -}}{%- endif -%}
    {%- if message['content'] is string -%}
        {{- message['content'] | trim -}}
    {%- else -%}
        {%- for part in message['content'] -%}
            {%- if part['type'] == 'image' -%}{{- '<|image|>' -}}
            {%- elif part['type'] == 'text' -%}{{- part['text'] | trim -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{- '<turn|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|turn>model\n' -}}
    {%- if not thinking -%}{{- '<|channel>thought\n<channel|>' -}}{%- endif -%}
{%- endif -%}
"""

# Text the tokenizer's merges are learned from: a few signs and menus in the
# languages travellers meet, so the tiny vocabulary covers their scripts.
_CORPUS = [
    "Exit Entrance Toilets Tickets Platform Departures Arrivals No smoking Open Closed",
    "Menu Starters Main courses Desserts Drinks Soup of the day Grilled chicken with rice",
    "Ausgang Eingang Fahrkarten Gleis Abfahrt Speisekarte Schnitzel mit Pommes Bier",
    "Sortie Entrée Billets Quai Départs Carte Plat du jour Boeuf bourguignon Vin rouge",
    "Salida Entrada Billetes Andén Salidas Menú Paella Tortilla española Cerveza",
    "Uscita Entrata Biglietti Binario Partenze Menù Pasta al pomodoro Pizza Vino",
    "Saída Entrada Bilhetes Plataforma Partidas Cardápio Bacalhau Pastel de nata",
    "Выход Вход Билеты Платформа Отправление Меню Борщ Пельмени Чай",
    "Вихід Вхід Квитки Платформа Відправлення Меню Борщ Вареники",
    "出口 入口 切符 乗り場 出発 メニュー ラーメン 寿司 豚肉 牛肉 鶏肉 お茶",
    "出口 入口 车票 站台 出发 菜单 饺子 米饭 猪肉 牛肉 鸡肉 茶",
    "출구 입구 표 승강장 출발 메뉴 비빔밥 김치찌개 돼지고기 소고기",
    "مخرج مدخل تذاكر رصيف المغادرة قائمة الطعام فلافل حمص دجاج شاي",
    "Çıkış Giriş Bilet Peron Kalkış Menü Kebap Çorba Ayran",
    "Wyjście Wejście Bilety Peron Odjazdy Menu Pierogi Żurek",
    "You are a travel assistant. Translate the text and explain it for the traveller.",
    "The sign says that the platform is closed. This dish contains pork and garlic.",
    # the prompt's own instructions, which a real tokenizer reads in a few hundred tokens:
    # without them the tiny one spells them out in bytes and pieces, several times as long
    SYSTEM_PROMPT,
]

TINY_TEXT_CONFIG = {
    "vocab_size": 0,  # at least the tokenizer's size
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 4,
    "layer_types": ["sliding_attention"] * 3 + ["full_attention"],
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "global_head_dim": 32,
    "num_global_key_value_heads": 1,
    "attention_k_eq_v": True,
    "sliding_window": 32,
    "enable_moe_block": True,
    "num_experts": 8,
    "top_k_experts": 2,
    "moe_intermediate_size": 32,
    "hidden_size_per_layer_input": 0,
    "vocab_size_per_layer_input": 0,
    "final_logit_softcapping": 30.0,
    "use_bidirectional_attention": "vision",
    "max_position_embeddings": 8192,
    "tie_word_embeddings": True,
}
TINY_VISION_CONFIG = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "patch_size": 16,
    "pooling_kernel_size": 3,
    "position_embedding_size": 1024,
}
TINY_IMAGE_SOFT_TOKENS = 70


def build_tokenizer():
    """A byte-fallback BPE tokenizer with Gemma 4's special tokens, as a transformers tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.normalizer = normalizers.Replace(" ", "▁")
    trainer = trainers.BpeTrainer(
        vocab_size=1280, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    trained.train_from_iterator(_CORPUS * 4, trainer)
    learned = json.loads(trained.to_str())["model"]
    # Byte tokens are ordinary vocabulary (as in Gemma's tokenizer), so any text round-trips.
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for token in [f"<0x{i:02X}>" for i in range(256)] + sorted(
        learned["vocab"], key=learned["vocab"].get
    ):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    backend = Tokenizer(models.BPE(vocab, merges, byte_fallback=True, unk_token="<unk>"))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    backend.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        add_bos_token=False,
        # as google/gemma-4-*-it's tokenizer_config.json names them
        extra_special_tokens={
            "image_token": "<|image|>",
            "boi_token": "<|image>",
            "eoi_token": "<image|>",
            "audio_token": "<|audio|>",
            "boa_token": "<|audio>",
            "eoa_token": "<audio|>",
            "sot_token": "<|turn>",
            "eot_token": "<turn|>",
            "soc_token": "<|channel>",
            "eoc_token": "<channel|>",
            "think_token": "<|think|>",
            "escape_token": '<|"|>',
            "str_token": "<|tool_response>",
            "etr_token": "<tool_response|>",
            "stc_token": "<|tool_call>",
            "etc_token": "<tool_call|>",
            "std_token": "<|tool>",
            "etd_token": "<tool|>",
        },
    )
    # ... and its unnamed one, as Gemma4Processor adds it ("extra_special_tokens" there)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|video|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE.strip()  # saved as chat_template.jinja
    return tokenizer


# google/gemma-4-26B-A4B-it's architecture (DESIGN.md; intermediate_size of the shared MLP
# assumed 2112). 25.8B parameters, 3.8B active per token. For speed measurements only.
FULL_SIZE_TEXT_CONFIG = {
    "vocab_size": 262_144,
    "hidden_size": 2816,
    "intermediate_size": 2112,
    "num_hidden_layers": 30,
    "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 5,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 256,
    "global_head_dim": 512,
    "num_global_key_value_heads": 2,
    "attention_k_eq_v": True,
    "sliding_window": 1024,
    "enable_moe_block": True,
    "num_experts": 128,
    "top_k_experts": 8,
    "moe_intermediate_size": 704,
    "hidden_size_per_layer_input": 0,
    "vocab_size_per_layer_input": 0,
    "final_logit_softcapping": 30.0,
    "use_bidirectional_attention": "vision",
    "max_position_embeddings": 262_144,
    "tie_word_embeddings": True,
}
FULL_SIZE_VISION_CONFIG = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "head_dim": 72,
    "patch_size": 16,
    "pooling_kernel_size": 3,
    "position_embedding_size": 10 * 1024,
}


def build_config(tokenizer, *, text: dict | None = None, vision: dict | None = None):
    """A Gemma4Config whose special token ids are the tokenizer's (tiny sizes by default)."""
    from transformers import Gemma4Config

    ids = tokenizer.convert_tokens_to_ids
    text_config = dict(text or TINY_TEXT_CONFIG)
    text_config["vocab_size"] = max(text_config["vocab_size"], len(tokenizer))
    text_config.update(
        pad_token_id=ids("<pad>"),
        eos_token_id=[ids("<eos>"), ids("<turn|>")],
        bos_token_id=ids("<bos>"),
    )
    return Gemma4Config(
        text_config=text_config,
        vision_config=dict(vision or TINY_VISION_CONFIG),
        audio_config=None,
        image_token_id=ids("<|image|>"),
        boi_token_id=ids("<|image>"),
        eoi_token_id=ids("<image|>"),
        audio_token_id=ids("<|audio|>"),
        boa_token_id=ids("<|audio>"),
        eoa_token_index=ids("<audio|>"),
        video_token_id=ids("<|video|>"),
    )


def write_tiny_checkpoint(
    path: str | Path, *, seed: int = 0, snapshot_layout: bool = False
) -> Path:
    """Write the tiny checkpoint to `path` (created if missing) and return it.

    `snapshot_layout`: the files as a Hugging Face snapshot of google/gemma-4-26B-A4B-it
    holds them: the weights in shards named by model.safetensors.index.json, and the image
    processor's config nested in processor_config.json (transformers 5), with no
    preprocessor_config.json."""
    import torch
    from transformers import Gemma4ForConditionalGeneration, Gemma4ImageProcessorPil

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = build_config(tokenizer)
    torch.manual_seed(seed)
    model = Gemma4ForConditionalGeneration(config).to(torch.bfloat16)
    # Random init leaves some scales at zero or one; give every tensor some spread so
    # different prompts really lead to different tokens.
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.5 if param.ndim == 1 else 0.08)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    shards = {}
    if snapshot_layout:  # at least two shards, as the real checkpoint's weights come
        size = sum(param.numel() * param.element_size() for param in model.parameters())
        shards["max_shard_size"] = size // 2
    model.save_pretrained(path, **shards)
    tokenizer.save_pretrained(path)
    image_processor = Gemma4ImageProcessorPil(max_soft_tokens=TINY_IMAGE_SOFT_TOKENS)
    if snapshot_layout:
        _write_processor_config(path, image_processor)
    else:
        image_processor.save_pretrained(path)
    (path / "TINY_CHECKPOINT.json").write_text(
        json.dumps({"seed": seed, "note": "random weights, for tests only"}) + "\n"
    )
    return path


def _write_processor_config(path: Path, image_processor) -> None:
    """processor_config.json as transformers 5's Gemma4Processor saves it, the image
    processor's config nested in it (written here: Gemma4Processor needs torchvision)."""
    config = {
        "image_processor": image_processor.to_dict(),
        "image_seq_length": image_processor.max_soft_tokens,
        "processor_class": "Gemma4Processor",
    }
    (path / "processor_config.json").write_text(json.dumps(config, indent=2) + "\n")
