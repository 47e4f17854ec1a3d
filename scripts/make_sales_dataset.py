#!/usr/bin/env python3
"""Generates datasets/sales/: a sales-assistant dataset about Kestrel Ridge Outfitters, a FICTIONAL outdoor-gear
company invented for QLoraNet. Every answer is built from the fact tables below, so answers are consistent;
questions come from many phrasings. Phrasings are split in two disjoint sets: the train files use one, the
validation (held-out) files the other, so the held-out loss measures whether the model learned the FACTS (prices,
policy numbers, specs), not the training sentences. Deterministic: same output on every run (python3, stdlib only).

    python3 scripts/make_sales_dataset.py            # writes datasets/sales/* and datasets/general/heldout.jsonl

datasets/sales/mc_test.jsonl is a held-out multiple-choice set over the same facts (the `sales_mc` evaluation task).

It also turns datasets/general/heldout.txt (prose in the style of an old State of the Union address, written for
this project) into heldout.jsonl, one paragraph per row, for a "general domain" loss in the completion format.
"""
import csv
import io
import json
import os
import random

SEED = 20240611
DATASETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "datasets")
OUT = os.path.join(DATASETS, "sales")

COMPANY = "Kestrel Ridge Outfitters"
SYSTEM = ("You are the sales assistant of Kestrel Ridge Outfitters, an outdoor gear shop. "
          "Answer with the shop's real prices and policies, briefly and politely.")

# ---------------------------------------------------------------------------------------------------------------
# Fact tables (all invented).
# ---------------------------------------------------------------------------------------------------------------

# sku, name, category, price (USD), weight, one-line spec, best for
PRODUCTS = [
    ("KR-TN-201", "Ridgeline 2 tent", "tent", 249.00, "1.9 kg",
     "a two-person, three-season tent with a 3000 mm waterproof fly and two doors", "backpacking couples"),
    ("KR-TN-401", "Basecamp 4 tent", "tent", 389.00, "4.6 kg",
     "a four-person family tent with 1.9 m of standing height and a large vestibule", "car camping with a family"),
    ("KR-TN-101", "Solo Bivy", "tent", 179.00, "0.95 kg",
     "a one-person bivy shelter with a single hooped pole and a bug-net hood", "fast solo trips"),
    ("KR-SB-020", "Ember 20 sleeping bag", "sleeping bag", 199.00, "1.1 kg",
     "an 800-fill down bag rated to -7 C (20 F)", "cold nights in spring and autumn"),
    ("KR-SB-040", "Drift 40 sleeping bag", "sleeping bag", 119.00, "1.3 kg",
     "a synthetic bag rated to 4 C (40 F) that stays warm when damp", "summer trips and wet climates"),
    ("KR-PD-042", "Cloudrest pad", "sleeping pad", 139.00, "540 g",
     "an inflatable sleeping pad with an R-value of 4.2, 7 cm thick", "three-season camping"),
    ("KR-PK-045", "Traverse 45 backpack", "backpack", 169.00, "1.4 kg",
     "a 45-litre pack with an adjustable torso and a hip-belt pocket", "weekend trips"),
    ("KR-PK-065", "Traverse 65 backpack", "backpack", 229.00, "2.0 kg",
     "a 65-litre pack with a load-lifting frame, rated for 25 kg", "week-long treks"),
    ("KR-PK-022", "Daytripper 22 pack", "backpack", 79.00, "620 g",
     "a 22-litre daypack with a rain cover and a hydration sleeve", "day hikes"),
    ("KR-ST-001", "Flicker stove", "stove", 59.00, "85 g",
     "a canister stove that boils one litre of water in about 3.5 minutes", "light cooking on the trail"),
    ("KR-WF-010", "ClearFlow filter", "water filter", 45.00, "90 g",
     "a 0.1-micron squeeze filter good for 1,500 litres", "treating stream water"),
    ("KR-JK-310", "Squall rain jacket", "jacket", 149.00, "280 g",
     "a 2.5-layer waterproof shell with pit zips and a helmet-sized hood", "rainy hikes"),
    ("KR-JK-650", "Loft down jacket", "jacket", 219.00, "340 g",
     "a 650-fill down jacket that packs into its own pocket", "cold evenings in camp"),
    ("KR-HL-300", "Beacon 300 headlamp", "headlamp", 39.00, "78 g",
     "a 300-lumen headlamp with a USB-C battery that lasts 40 hours on low", "night hiking and camp chores"),
    ("KR-TP-120", "Summit carbon poles", "trekking poles", 129.00, "480 g per pair",
     "a pair of carbon trekking poles with cork grips and flick locks", "steep descents"),
    ("KR-CK-002", "Camp Kitchen set", "cook set", 69.00, "410 g",
     "a two-person aluminium pot, pan and two mugs that nest together", "cooking for two"),
]

# Policy facts: (key, answer). Questions for each key are in POLICY_QUESTIONS (train phrasings, held-out phrasings).
POLICIES = {
    "free_shipping": "Standard shipping is free on orders of $75 or more. Below $75 it is a flat $6.95.",
    "standard_time": "Standard shipping takes 3-5 business days within the United States.",
    "express": "Express shipping costs $19.95 and arrives in 1-2 business days.",
    "cutoff": "Orders placed before 2 pm Pacific time on a business day ship the same day.",
    "international": "We ship to the United States and Canada only. Shipping to Canada is $24.95 and takes 7-10 business days.",
    "returns_window": "You can return unused items within 60 days of delivery for a full refund to the original payment method.",
    "returns_used": "Used items can be returned within 30 days for store credit, as long as they are clean and undamaged.",
    "return_shipping": "Returns are free: we email you a prepaid label. Refunds are issued within 5-7 business days after the item reaches us.",
    "final_sale": "Clearance items marked Final Sale cannot be returned or exchanged.",
    "warranty": "Every product has a 2-year warranty against defects in materials and workmanship.",
    "trail_promise": "Tents and backpacks are covered for 5 years under our Trail Promise warranty.",
    "warranty_excludes": "The warranty does not cover normal wear and tear, accidents, or damage from misuse.",
    "warranty_claim": "To make a warranty claim, email warranty@kestrelridge.example with your order number and a photo of the problem. We repair or replace the item.",
    "welcome": "First-time customers get 10% off their first order with the code WELCOME10.",
    "bundle": "The Camp Set bundle takes 15% off when you buy a tent, a sleeping bag and a sleeping pad together.",
    "club": "Ridge Club membership is free and earns 5% back in points on every order.",
    "student": "Students and military members get 10% off after verifying their status online.",
    "stacking": "Discount codes cannot be combined with each other, but Ridge Club points are earned on every order.",
    "price_drop": "If our own price drops within 14 days of your purchase, we refund the difference.",
    "competitor": "We do not match other stores' prices, but our own price drops within 14 days are refunded.",
    "hours": "Our support team answers chat and phone from 8 am to 6 pm Pacific time, Monday to Saturday.",
    "phone": "You can call us at 1-800-555-0142 during support hours.",
    "store": "We have one store, in Millbrook, Oregon, at 12 Alder Street. It is open 10 am to 7 pm every day.",
    "payment": "We accept Visa, Mastercard, American Express, PayPal and Kestrel Ridge gift cards.",
    "gift_cards": "Gift cards come in amounts from $25 to $500 and never expire.",
}

# For each policy: (train phrasings, held-out phrasings). Held-out ones never appear in training.
POLICY_QUESTIONS = {
    "free_shipping": (["Do you offer free shipping?", "How much is shipping?", "What does shipping cost?",
                       "Is shipping free?", "What is your shipping fee?"],
                      ["At what order total does delivery become free?", "Will I pay for delivery on a $40 order?"]),
    "standard_time": (["How long does shipping take?", "When will my order arrive?", "How fast is standard shipping?",
                       "What are your delivery times?"],
                      ["How many business days should I expect for normal delivery?"]),
    "express": (["Do you have express shipping?", "Can I get faster shipping?", "How much is express delivery?",
                 "What's your quickest shipping option?"],
                ["What would it cost to get my order in a day or two?"]),
    "cutoff": (["When do orders ship?", "If I order today, when does it ship?", "Is there a same-day shipping cutoff?"],
               ["What time do I need to order by for it to leave the warehouse today?"]),
    "international": (["Do you ship internationally?", "Can you ship to Canada?", "Do you ship outside the US?"],
                      ["I live in Toronto. Can I order from you, and what would delivery cost?"]),
    "returns_window": (["What is your return policy?", "Can I return something?", "How long do I have to return an item?",
                        "How do returns work?"],
                       ["If the gear arrives and I change my mind, how many days do I have to send it back?"]),
    "returns_used": (["Can I return an item I have used?", "What if I've already used it?",
                      "Do you accept returns on used gear?"],
                     ["I took the product on one trip and didn't like it. Can I still send it back?"]),
    "return_shipping": (["Who pays for return shipping?", "Are returns free?", "How long does a refund take?"],
                        ["After I mail a return, when will the money be back on my card?"]),
    "final_sale": (["Can I return clearance items?", "Are sale items returnable?"],
                   ["Is a Final Sale product eligible for an exchange?"]),
    "warranty": (["What warranty do you offer?", "Is there a warranty?", "How long is the warranty?",
                  "Do your products come with a guarantee?"],
                 ["If my headlamp breaks after a year of normal use, is that covered?"]),
    "trail_promise": (["How long is the warranty on tents?", "What is the Trail Promise?",
                       "Are backpacks covered longer?"],
                      ["My pack's frame cracked after four years. Am I still covered?"]),
    "warranty_excludes": (["What does the warranty not cover?", "Does the warranty cover accidents?"],
                          ["I tore my jacket on a branch. Is that a warranty repair?"]),
    "warranty_claim": (["How do I make a warranty claim?", "How do I file a warranty claim?",
                        "Where do I send a warranty request?"],
                       ["Something on my tent failed. What do I need to send you to get it fixed?"]),
    "welcome": (["Do you have a discount for new customers?", "Is there a first-order discount?",
                 "Do you have any promo codes?"],
                ["It's my first time buying from you. Is there a code I can use?"]),
    "bundle": (["Do you have bundle deals?", "Is there a discount if I buy a tent and a sleeping bag?",
                "What is the Camp Set bundle?"],
               ["If I get a shelter, a bag and a pad at once, do I save anything?"]),
    "club": (["What is the Ridge Club?", "Do you have a loyalty program?", "Does the Ridge Club cost anything?"],
             ["Is there a rewards scheme, and how much do I earn back?"]),
    "student": (["Do you have a student discount?", "Is there a military discount?"],
                ["I'm in the army. Do I get anything off?"]),
    "stacking": (["Can I combine discount codes?", "Can I use two codes at once?"],
                 ["Can I use WELCOME10 together with my student discount?"]),
    "price_drop": (["Do you have price protection?", "What if the price drops after I buy?"],
                   ["I bought a jacket last week and now it's cheaper on your site. Can I get the difference back?"]),
    "competitor": (["Do you price match?", "Will you match a competitor's price?"],
                   ["Another shop sells this for less. Will you beat their price?"]),
    "hours": (["What are your support hours?", "When is customer service open?"],
              ["Can I reach someone on a Sunday?"]),
    "phone": (["What is your phone number?", "Can I call you?"],
              ["Is there a number I can ring to talk to a person?"]),
    "store": (["Do you have a physical store?", "Where is your store?", "When is your shop open?"],
              ["Can I try gear on in person somewhere?"]),
    "payment": (["What payment methods do you accept?", "Can I pay with PayPal?"],
                ["Do you take Amex?"]),
    "gift_cards": (["Do you sell gift cards?", "Do gift cards expire?"],
                   ["What values can I buy a gift card in?"]),
}

# Product question phrasings: (train, held-out) per fact kind; {n} is the product name.
PRODUCT_QUESTIONS = {
    "price": (["How much is the {n}?", "What does the {n} cost?", "What's the price of the {n}?",
               "How much do you charge for the {n}?", "Price of the {n}?"],
              ["What would I pay for a {n}?", "How expensive is the {n}?"]),
    "weight": (["How much does the {n} weigh?", "What is the weight of the {n}?", "Is the {n} heavy?"],
               ["How many grams or kilos is the {n}?"]),
    "spec": (["Tell me about the {n}.", "What is the {n}?", "Can you describe the {n}?", "What are the specs of the {n}?"],
             ["Give me a quick rundown of the {n}."]),
    "sku": (["What is the SKU of the {n}?", "What's the product code for the {n}?"],
            ["Which item number should I search for to find the {n}?"]),
    "fit": (["Who is the {n} for?", "What is the {n} good for?"],
            ["Would the {n} suit me, and for what kind of trip?"]),
}

GREETINGS = ["Hi!", "Hello.", "Hey there.", "Good morning.", "Hi, quick question."]
OPENERS = ["Hello! How can I help you today?", "Hi! What can I help you find?", "Welcome to Kestrel Ridge Outfitters. How can I help?"]
THANKS = ["Thanks!", "Great, thank you.", "Perfect, thanks.", "That helps, thanks."]
CLOSERS = ["You're welcome! Happy trails.", "Glad to help. Enjoy your trip!", "Any time. Have a great time outdoors!"]

# Objection handling: (objection phrasings (train, held-out), answer builder).
OBJECTIONS = {
    "too_expensive": ((["That's too expensive.", "Hmm, that's more than I wanted to spend.", "Why is it so pricey?"],
                       ["Honestly the price puts me off."]),
                      lambda p: f"I understand. The {p[1]} is built to last and is covered by "
                                + ("our 5-year Trail Promise" if p[2] in ("tent", "backpack") else "our 2-year warranty")
                                + ". If it's your first order, WELCOME10 takes 10% off, which brings it to "
                                + money(p[3] * 0.9) + "."),
    "cheaper_elsewhere": ((["I saw it cheaper somewhere else.", "Another site has a lower price."],
                           ["A competitor is selling something similar for less."]),
                          lambda p: "We don't match other stores' prices, but if our own price on the "
                                    + f"{p[1]} drops within 14 days of your purchase we refund the difference, "
                                    + "and you get our warranty and free 60-day returns on unused gear."),
    "unsure_fit": ((["I'm not sure it's right for me.", "What if it doesn't suit me?"],
                    ["I'm worried I'll regret buying it."]),
                   lambda p: f"No risk there: you can return the {p[1]} unused within 60 days for a full refund, "
                             + "and the return label is free."),
    "need_soon": ((["I need it by this weekend.", "I'm leaving on Friday, will it arrive?"],
                   ["My trip starts in three days. Can you get it to me in time?"]),
                  lambda p: "Choose express shipping ($19.95, 1-2 business days); orders placed before 2 pm "
                            + "Pacific on a business day ship the same day."),
}


def money(x):
    return f"${x:,.2f}"


def product_answer(kind, p, rng):
    sku, name, cat, price, weight, spec, best = p
    if kind == "price":
        return rng.choice([f"The {name} is {money(price)}.", f"The {name} costs {money(price)}.",
                           f"It's {money(price)} ({sku})."])
    if kind == "weight":
        return rng.choice([f"The {name} weighs {weight}.", f"It weighs {weight}."])
    if kind == "spec":
        return f"The {name} ({sku}) is {spec}. It costs {money(price)}."
    if kind == "sku":
        return f"The {name} is SKU {sku}."
    return f"The {name} is best for {best}: it is {spec}."


def shipping_cost(total):
    return 0.0 if total >= 75 else 6.95


def order_question(items, rng, heldout):
    names = " and the ".join(p[1] for p in items)
    train_forms = ["If I buy the {x}, what's the total with shipping?", "How much for the {x}, shipping included?",
                   "I'd like the {x}. What will I pay in total?"]
    held_forms = ["Add the {x} to my cart: what's the grand total after delivery?"]
    return rng.choice(held_forms if heldout else train_forms).format(x=names)


def order_answer(items):
    subtotal = sum(p[3] for p in items)
    ship = shipping_cost(subtotal)
    parts = " + ".join(f"{money(p[3])} ({p[1]})" for p in items)
    ship_text = "shipping is free because the order is $75 or more" if ship == 0 else "standard shipping adds $6.95 because the order is under $75"
    return f"{parts} = {money(subtotal)}; {ship_text}, so the total is {money(subtotal + ship)}."


def bundle_question(t, s, pad, rng, heldout):
    forms = (["What do I pay for the {a}, the {b} and the {c} together?",
              "How much is the Camp Set with the {a}, {b} and {c}?"],
             ["Price the {a} plus the {b} plus the {c} as one order for me."])
    return rng.choice(forms[1] if heldout else forms[0]).format(a=t[1], b=s[1], c=pad[1])


def bundle_answer(t, s, pad):
    subtotal = t[3] + s[3] + pad[3]
    return (f"Together they are {money(subtotal)}. As a Camp Set bundle (tent, sleeping bag and pad) you get 15% off, "
            f"so you pay {money(subtotal * 0.85)}, with free shipping.")


def welcome_question(p, rng, heldout):
    forms = (["What's the {n} with the WELCOME10 code?", "How much is the {n} after the first-order discount?"],
             ["As a new customer, what does the {n} come to with my 10% code?"])
    return rng.choice(forms[1] if heldout else forms[0]).format(n=p[1])


def welcome_answer(p):
    return f"With WELCOME10 the {p[1]} is {money(p[3] * 0.9)} instead of {money(p[3])}."


def compare_question(a, b, rng, heldout):
    forms = (["What's the difference between the {a} and the {b}?", "Should I get the {a} or the {b}?"],
             ["Help me choose between the {a} and the {b}."])
    return rng.choice(forms[1] if heldout else forms[0]).format(a=a[1], b=b[1])


def compare_answer(a, b):
    return (f"The {a[1]} ({money(a[3])}, {a[4]}) is {a[5]}; the {b[1]} ({money(b[3])}, {b[4]}) is {b[5]}. "
            f"Pick the {a[1]} for {a[6]} and the {b[1]} for {b[6]}.")


# ---------------------------------------------------------------------------------------------------------------
# Building examples: each example is a list of (user, assistant) turns.
# ---------------------------------------------------------------------------------------------------------------

def single_facts(rng, heldout):
    """One (question, answer) per fact and phrasing of the split."""
    pick = 1 if heldout else 0
    qa = []
    for p in PRODUCTS:
        for kind, forms in PRODUCT_QUESTIONS.items():
            for f in forms[pick]:
                qa.append((f.format(n=p[1]), product_answer(kind, p, rng)))
    for key, forms in POLICY_QUESTIONS.items():
        for q in forms[pick]:
            qa.append((q, POLICIES[key]))
    return qa


def computed(rng, heldout, n):
    qa = []
    for _ in range(n):
        r = rng.random()
        if r < 0.3:
            items = rng.sample(PRODUCTS, rng.choice([1, 2]))
            qa.append((order_question(items, rng, heldout), order_answer(items)))
        elif r < 0.5:
            t = rng.choice([p for p in PRODUCTS if p[2] == "tent"])
            s = rng.choice([p for p in PRODUCTS if p[2] == "sleeping bag"])
            pad = PRODUCTS[[p[2] for p in PRODUCTS].index("sleeping pad")]
            qa.append((bundle_question(t, s, pad, rng, heldout), bundle_answer(t, s, pad)))
        elif r < 0.7:
            p = rng.choice(PRODUCTS)
            qa.append((welcome_question(p, rng, heldout), welcome_answer(p)))
        else:
            cat = rng.choice(["tent", "sleeping bag", "backpack", "jacket"])
            a, b = rng.sample([p for p in PRODUCTS if p[2] == cat], 2)
            qa.append((compare_question(a, b, rng, heldout), compare_answer(a, b)))
    return qa


def objections(rng, heldout, n):
    pick = 1 if heldout else 0
    convs = []
    keys = sorted(OBJECTIONS)
    for _ in range(n):
        p = rng.choice(PRODUCTS)
        key = rng.choice(keys)
        forms, answer = OBJECTIONS[key]
        q1 = rng.choice(PRODUCT_QUESTIONS["price"][pick]).format(n=p[1])
        convs.append([(q1, product_answer("price", p, rng)), (rng.choice(forms[pick]), answer(p))])
    return convs


# Conversations stay within 256 Llama tokens (the quickstart's max_seq_len) so that nothing is truncated: the
# system prompt and the [INST] markup take ~60 tokens, and digits are one token each, hence a budget in characters.
MAX_CHARS = 420


def fits(turns):
    return sum(len(u) + len(a) for u, a in turns) <= MAX_CHARS


def conversations(qa, rng, n_multi):
    """Singles stay single; some are chained into 2-3 turn chats with a greeting or a thank-you."""
    rng.shuffle(qa)
    convs = []
    i = 0
    while i < len(qa):
        if n_multi > 0 and i + 1 < len(qa):
            turns = [qa[i]]
            i += 1
            n_multi -= 1
            want = rng.choice([2, 3])
            while len(turns) < want and i < len(qa) and fits(turns + [qa[i]]):
                turns.append(qa[i])
                i += 1
            small_talk = [(rng.choice(GREETINGS), rng.choice(OPENERS)), (rng.choice(THANKS), rng.choice(CLOSERS))]
            if rng.random() < 0.3 and fits(small_talk[:1] + turns):
                turns.insert(0, small_talk[0])
            if rng.random() < 0.3 and fits(turns + small_talk[1:]):
                turns.append(small_talk[1])
            convs.append(turns)
        else:
            convs.append([qa[i]])
            i += 1
    return convs


def build(heldout):
    rng = random.Random(SEED + (1 if heldout else 0))
    qa = single_facts(rng, heldout) + computed(rng, heldout, 40 if heldout else 240)
    convs = conversations(qa, rng, n_multi=len(qa) // 6)
    convs += objections(rng, heldout, 16 if heldout else 64)
    rng.shuffle(convs)
    return convs


# ---------------------------------------------------------------------------------------------------------------
# Writing the files.
# ---------------------------------------------------------------------------------------------------------------

def chat_rows(convs):
    for turns in convs:
        msgs = [{"role": "system", "content": SYSTEM}]
        for u, a in turns:
            msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
        yield {"messages": msgs}


def instruction_rows(convs, rng):
    """The first turn of each conversation; a third of them move a customer detail into `input`."""
    for turns in convs:
        u, a = turns[0]
        if u in GREETINGS:
            u, a = turns[1]
        if rng.random() < 0.33:
            yield {"instruction": "Answer the customer's question as a Kestrel Ridge Outfitters sales assistant.",
                   "input": u, "output": a}
        else:
            yield {"instruction": u, "input": "", "output": a}


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_csv(path, rows):
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=["instruction", "input", "output"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())


def write_general():
    """One completion row per paragraph; the salutation line joins the first paragraph."""
    with open(os.path.join(DATASETS, "general", "heldout.txt"), encoding="utf-8") as f:
        paras = [p.strip() for p in f.read().split("\n\n") if p.strip()]
    rows = [{"text": paras[0] + "\n\n" + paras[1]}] + [{"text": p} for p in paras[2:]]
    write_jsonl(os.path.join(DATASETS, "general", "heldout.jsonl"), rows)
    print(f"general: {len(rows)} completion rows")


def write_general_cloze():
    """general_cloze: each sentence of heldout.txt (8+ words) with its last word to choose among four: the right
    one and three other sentences' last words. A general-domain multiple-choice check of the tiny model's own
    register (written for this project), for the per-format table and the before/after of fine-tuning."""
    import re
    with open(os.path.join(DATASETS, "general", "heldout.txt"), encoding="utf-8") as f:
        text = " ".join(p.strip() for p in f.read().split("\n\n")[1:])
    sentences = [x.strip() for x in re.split(r"(?<=[.;!?])\s+", text) if len(x.split()) >= 8]
    rows = []
    for sent in sentences:
        words = sent.rstrip(".;!?").split()
        rows.append((" ".join(words[:-1]), words[-1].strip(",:'\"")))
    finals = sorted({a for _, a in rows})
    rng = random.Random(SEED + 2000)
    out = []
    for i, (context, answer) in enumerate(rows):
        choices = [answer] + rng.sample([w for w in finals if w.lower() != answer.lower()], 3)
        rng.shuffle(choices)
        out.append({"id": f"cloze-{i:02d}", "context": context, "choices": choices, "answer": choices.index(answer)})
    write_jsonl(os.path.join(DATASETS, "general", "cloze_test.jsonl"), out)
    print(f"general: {len(out)} cloze questions")


def check_heldout_is_unseen(train, heldout):
    """No fact-bearing held-out question may appear verbatim in training (greetings and thanks may)."""
    small_talk = set(GREETINGS) | set(THANKS)
    seen = {u for turns in train for u, _ in turns}
    leaked = {u for turns in heldout for u, _ in turns if u in seen and u not in small_talk}
    assert not leaked, f"held-out questions also in train: {sorted(leaked)[:5]}"


# ---------------------------------------------------------------------------------------------------------------
# The held-out multiple-choice set (mc_test.jsonl) for `eval --tasks sales_mc`: one question per fact, asked in words
# that occur in no training row, the right answer among three plausible wrong ones (other products' prices, weights
# and SKUs, the neighbouring policy numbers, the usual arithmetic slips). Many answers are computed (discounted
# prices, bundle and order totals), so the set checks facts, not sentences. Its own random generator: the chat files
# above are unchanged by it.
# ---------------------------------------------------------------------------------------------------------------

MC_SEED = SEED + 1000

# Policy facts as (question, lead-in of the answer, right answer, wrong answers).
MC_POLICY = [
    ("From what order value is standard delivery free of charge?", "Standard shipping is free on orders of", "$75", ["$50", "$100", "$60"]),
    ("What is the flat shipping fee on a small order?", "Below $75, standard shipping is a flat", "$6.95", ["$4.95", "$9.95", "$19.95"]),
    ("How many business days does standard delivery take inside the US?", "Standard shipping takes", "3-5 business days", ["1-2 business days", "7-10 business days", "5-7 business days"]),
    ("What is the price of express delivery?", "Express shipping costs", "$19.95", ["$24.95", "$14.95", "$6.95"]),
    ("By what time must an order be placed to ship the same business day?", "Orders placed before", "2 pm Pacific time", ["12 pm Pacific time", "5 pm Pacific time", "2 pm Eastern time"]),
    ("What does shipping to Canada cost?", "Shipping to Canada is", "$24.95", ["$19.95", "$6.95", "$29.95"]),
    ("How long does a parcel to Canada take?", "Shipping to Canada takes", "7-10 business days", ["3-5 business days", "1-2 business days", "14-21 business days"]),
    ("Within how many days can unused gear be sent back for a full refund?", "Unused items can be returned within", "60 days", ["30 days", "14 days", "90 days"]),
    ("Within how many days can used gear be returned for store credit?", "Used items can be returned within", "30 days", ["60 days", "14 days", "45 days"]),
    ("How soon is a refund issued once a return reaches the shop?", "Refunds are issued within", "5-7 business days", ["1-2 business days", "10-14 business days", "30 days"]),
    ("How many years does the standard warranty last?", "The standard warranty lasts", "2 years", ["1 year", "5 years", "3 years"]),
    ("How many years are tents and backpacks covered under the Trail Promise?", "The Trail Promise covers tents and backpacks for", "5 years", ["2 years", "10 years", "3 years"]),
    ("What discount code do first-time customers use?", "First-time customers use the code", "WELCOME10", ["FIRST15", "RIDGE10", "HELLO5"]),
    ("What percentage does the first-order code take off?", "The first-order code takes off", "10%", ["15%", "5%", "20%"]),
    ("What percentage does the Camp Set bundle save?", "The Camp Set bundle takes off", "15%", ["10%", "20%", "5%"]),
    ("How much back in points does Ridge Club membership earn on each order?", "Ridge Club members earn back", "5%", ["10%", "2%", "15%"]),
    ("What discount do students and military members get?", "Students and military members get", "10% off", ["15% off", "5% off", "20% off"]),
    ("Within how many days of purchase is a drop in the shop's own price refunded?", "Our own price drops are refunded within", "14 days", ["30 days", "7 days", "60 days"]),
    ("Until what time does the support team answer on weekdays?", "Support answers from 8 am to", "6 pm Pacific time", ["8 pm Pacific time", "5 pm Pacific time", "6 pm Eastern time"]),
    ("On which day is support closed?", "Support is closed on", "Sunday", ["Saturday", "Monday", "Friday"]),
    ("What is the support phone number?", "The support number is", "1-800-555-0142", ["1-800-555-0124", "1-888-555-0142", "1-800-555-0199"]),
    ("In which town is the shop's only store?", "The store is in", "Millbrook, Oregon", ["Millbrook, Washington", "Alder, Oregon", "Bend, Oregon"]),
    ("What is the street address of the store?", "The store is at", "12 Alder Street", ["21 Alder Street", "12 Birch Street", "120 Alder Street"]),
    ("What is the smallest gift card amount?", "Gift cards start at", "$25", ["$10", "$50", "$5"]),
    ("What is the largest gift card amount?", "Gift cards go up to", "$500", ["$250", "$1,000", "$300"]),
    ("Where should a warranty claim be emailed?", "Warranty claims go to", "warranty@kestrelridge.example", ["support@kestrelridge.example", "returns@kestrelridge.example", "claims@kestrelridge.example"]),
]

MC_FORMS = {
    "price": ("What is the list price of the {n}?", "The {n} costs"),
    "weight": ("What does the {n} weigh?", "The {n} weighs"),
    "sku": ("Under which item code is the {n} sold?", "The {n} is SKU"),
    "category": ("What kind of gear is the {n}?", "The {n} is a"),
    "welcome": ("What does a new customer pay for the {n} using the first-order code?", "With WELCOME10 the {n} comes to"),
    "order": ("What is the total for just the {n}, delivered by standard shipping?", "With standard shipping the total is"),
    "bundle": ("As a Camp Set, what do the {a}, the {b} and the {c} cost together?", "As a Camp Set they come to"),
}


def nearest(values, right, k, key=lambda v: v):
    """The k values other than `right` closest to it (ties by order): plausible wrong answers."""
    others = [v for v in dict.fromkeys(values) if v != right]
    return sorted(others, key=lambda v: (abs(key(v) - key(right)), str(v)))[:k]


def weight_grams(w):
    x = float(w.split()[0])
    return x * 1000 if " kg" in w else x


def mc_row(rng, qid, kind, question, lead, right, wrong):
    choices = [right] + list(wrong)
    assert len(set(choices)) == len(choices) == 4, (qid, choices)
    rng.shuffle(choices)
    return {"id": qid, "kind": kind, "question": question, "lead": lead, "choices": choices, "answer": choices.index(right)}


def build_mc():
    rng = random.Random(MC_SEED)
    rows = []
    prices = [money(p[3]) for p in PRODUCTS]
    for p in PRODUCTS:
        sku, name, cat, price, weight, _, _ = p
        q, lead = MC_FORMS["price"]
        rows.append(mc_row(rng, f"price-{sku}", "price", q.format(n=name), lead.format(n=name), money(price),
                           nearest(prices, money(price), 3, key=lambda m: float(m[1:].replace(",", "")))))
        q, lead = MC_FORMS["weight"]
        rows.append(mc_row(rng, f"weight-{sku}", "weight", q.format(n=name), lead.format(n=name), weight,
                           nearest([x[4] for x in PRODUCTS], weight, 3, key=weight_grams)))
        q, lead = MC_FORMS["sku"]
        same_first = sorted((x[0] for x in PRODUCTS if x[0] != sku), key=lambda s: (s[:5] != sku[:5], s))
        rows.append(mc_row(rng, f"sku-{sku}", "sku", q.format(n=name), lead.format(n=name), sku, same_first[:3]))
        q, lead = MC_FORMS["welcome"]
        rows.append(mc_row(rng, f"welcome-{sku}", "computed", q.format(n=name), lead.format(n=name), money(price * 0.9),
                           [money(price), money(price * 0.85), money(price * 0.9 + 6.95)]))
    cats = sorted({p[2] for p in PRODUCTS})
    for p in rng.sample(PRODUCTS, 8):
        q, lead = MC_FORMS["category"]
        wrong = rng.sample([c for c in cats if c != p[2]], 3)
        rows.append(mc_row(rng, f"category-{p[0]}", "category", q.format(n=p[1]), lead.format(n=p[1]), p[2], wrong))
    for p in sorted((p for p in PRODUCTS if p[3] < 75), key=lambda p: p[0]):
        q, lead = MC_FORMS["order"]
        rows.append(mc_row(rng, f"order-{p[0]}", "computed", q.format(n=p[1]), lead, money(p[3] + 6.95),
                           [money(p[3]), money(p[3] + 19.95), money(p[3] + 5.95)]))
    tents = [p for p in PRODUCTS if p[2] == "tent"]
    bags = [p for p in PRODUCTS if p[2] == "sleeping bag"]
    pad = next(p for p in PRODUCTS if p[2] == "sleeping pad")
    for t in tents:
        for b in bags:
            subtotal = t[3] + b[3] + pad[3]
            q, lead = MC_FORMS["bundle"]
            rows.append(mc_row(rng, f"bundle-{t[0]}-{b[0]}", "computed", q.format(a=t[1], b=b[1], c=pad[1]), lead,
                               money(subtotal * 0.85), [money(subtotal), money(subtotal * 0.9), money(subtotal * 0.85 + 6.95)]))
    for i, (q, lead, right, wrong) in enumerate(MC_POLICY):
        rows.append(mc_row(rng, f"policy-{i:02d}", "policy", q, lead, right, wrong))
    return rows


def check_mc_is_unseen(rows, convs):
    seen = {u for turns in convs for u, _ in turns}
    leaked = [r["question"] for r in rows if r["question"] in seen]
    assert not leaked, f"multiple-choice questions also in train: {leaked[:5]}"


def main():
    os.makedirs(OUT, exist_ok=True)
    check_heldout_is_unseen(build(False), build(True))
    for split, heldout in (("train", False), ("validation", True)):
        convs = build(heldout)
        rows = list(chat_rows(convs))
        write_jsonl(os.path.join(OUT, f"{split}.jsonl"), rows)
        inst = list(instruction_rows(convs, random.Random(SEED + 7 + heldout)))
        write_jsonl(os.path.join(OUT, f"{split}_instruction.jsonl"), inst)
        write_csv(os.path.join(OUT, f"{split}_instruction.csv"), inst)
        print(f"{split}: {len(rows)} chat rows, {sum(len(c) for c in convs)} turns, {len(inst)} instruction rows")
    write_general()
    write_general_cloze()
    mc = build_mc()
    check_mc_is_unseen(mc, build(False))
    write_jsonl(os.path.join(OUT, "mc_test.jsonl"), mc)
    print(f"mc_test: {len(mc)} multiple-choice questions")


if __name__ == "__main__":
    main()
