#!/usr/bin/env python3
"""Build the small SentencePiece tokenizer bundled as ``kame_sim/assets/tokenizer_en_1k.model``.

Why a tokenizer of our own: KAME tokenizes the back-end's text with the front-end checkpoint's
SentencePiece model (Moshi's 32k English model). The simulator must turn oracle text into one
token per 80 ms frame even when no checkpoint is at hand (CI, laptops), so it ships a small model
with the same special ids (unk 0, bos 1, eos 2, text padding 3) trained on English task-oriented
dialogue we wrote ourselves. Token counts per word are close enough to the real tokenizer's for
timing studies; docs/demo-conversation.md reports the measured ratio.

Deterministic by design: the corpus is committed (scripts/tokenizer_corpus.txt, regenerated from
the seeded templates below with ``--regen-corpus``), training runs single-threaded with a fixed
seed, no sentence sampling or shuffling, and the model is written from memory so no file path
ends up in the embedded trainer spec. ``--check-determinism`` trains twice and compares bytes.

Usage::

    python scripts/build_tokenizer.py [--regen-corpus] [--check-determinism]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import sys
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "scripts" / "tokenizer_corpus.txt"
MODEL = ROOT / "kame_sim" / "assets" / "tokenizer_en_1k.model"
DEMO_TEXT = ROOT / "scenarios" / "data" / "demo" / "text" / "demo.json"
DEMO_ORACLE = ROOT / "scenarios" / "data" / "demo" / "oracle_raw" / "demo.json"
SHARED_TEXT = ROOT.parent / "shared" / "data" / "spokenwoz" / "text"

CORPUS_SEED = 20250101
CORPUS_LINES = 4000
SALAD_SHARE = 0.25
TRAIN_SEED = 42

# hard_vocab_limit stays at its default (True): the corpus has enough distinct pieces.
TRAINER_OPTIONS: dict[str, object] = {
    "model_type": "unigram",
    "vocab_size": 1024,
    "character_coverage": 1.0,
    "byte_fallback": True,  # any text encodes; unknown characters become <0xNN> pieces, never unk
    "split_digits": True,  # numbers as digit sequences: a 1k vocabulary cannot hold many numbers
    "normalization_rule_name": "nmt_nfkc",
    "unk_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "pad_id": 3,  # KAME's text padding id; a control piece, so encode never produces it
    "num_threads": 1,
    "input_sentence_size": 0,  # use every line (no random sampling)
    "shuffle_input_sentence": False,
    "max_sentence_length": 4192,
}

# --------------------------------------------------------------------------------------------
# Corpus: seeded templates of our own writing (task-oriented dialogue + chit-chat)
# --------------------------------------------------------------------------------------------

SLOTS: dict[str, list[str]] = {
    "food": [
        "italian",
        "indian",
        "chinese",
        "thai",
        "french",
        "british",
        "spanish",
        "japanese",
        "korean",
        "mexican",
        "turkish",
        "greek",
        "lebanese",
        "vietnamese",
        "european",
        "seafood",
        "vegetarian",
        "modern european",
        "african",
        "portuguese",
        "north american",
        "asian oriental",
    ],
    "price": ["cheap", "moderately priced", "expensive", "inexpensive", "mid range", "affordable"],
    "area": [
        "centre",
        "city centre",
        "north",
        "south",
        "east",
        "west",
        "north side",
        "south of town",
        "east side",
        "west end",
        "town centre",
        "riverside",
    ],
    "street": [
        "regent street",
        "hills road",
        "mill road",
        "king street",
        "bridge street",
        "market square",
        "station road",
        "trumpington street",
        "newmarket road",
        "chesterton road",
        "castle hill",
        "high street",
        "victoria avenue",
        "park terrace",
        "milton road",
        "histon road",
    ],
    "rname": [
        "pizza express",
        "the golden spoon",
        "riverside grill",
        "the blue door",
        "lotus garden",
        "casa mia",
        "the spice house",
        "harbour kitchen",
        "the old mill",
        "bella vista",
        "the green olive",
        "saffron",
        "the copper pot",
        "little tokyo",
        "la tasca",
        "the red lion",
    ],
    "hname": [
        "the grand hotel",
        "city lodge",
        "park view guesthouse",
        "the willow inn",
        "acorn house",
        "river house hotel",
        "the station hotel",
        "maple guesthouse",
        "kings court",
        "the gables",
        "orchard lodge",
        "bridge guest house",
        "the university arms",
        "hillside bed and breakfast",
    ],
    "htype": ["hotel", "guesthouse", "guest house", "bed and breakfast", "lodge", "inn"],
    "stars": ["two star", "three star", "four star", "five star", "one star"],
    "amenity": [
        "free parking",
        "free wifi",
        "internet",
        "breakfast",
        "a gym",
        "a swimming pool",
        "a restaurant",
        "a bar",
        "air conditioning",
        "a garden",
        "room service",
        "a lift",
    ],
    "day": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
    "num": ["one", "two", "three", "four", "five", "six", "seven", "eight"],
    "time_w": [
        "seven thirty",
        "eight o'clock",
        "half past six",
        "quarter to nine",
        "noon",
        "six pm",
        "nine in the morning",
        "ten fifteen",
        "eleven forty five",
        "twelve thirty",
        "five o'clock",
        "half past seven",
        "a quarter past eight",
        "midday",
        "two in the afternoon",
        "ten am",
    ],
    "time_d": [
        "7:30",
        "8:00",
        "18:30",
        "19:45",
        "09:15",
        "12:00",
        "13:20",
        "16:05",
        "21:00",
        "10:30",
        "7 pm",
        "8 am",
        "6:45 pm",
        "11:15 am",
        "5:50",
        "14:40",
        "17:10",
        "20:15",
    ],
    "city": [
        "cambridge",
        "london",
        "london kings cross",
        "london liverpool street",
        "ely",
        "norwich",
        "peterborough",
        "stansted airport",
        "birmingham new street",
        "leicester",
        "stevenage",
        "bishops stortford",
        "broxbourne",
        "kings lynn",
        "oxford",
    ],
    "attr": [
        "museum",
        "college",
        "park",
        "gallery",
        "theatre",
        "cinema",
        "swimming pool",
        "boat tour",
        "concert hall",
        "architecture",
        "nightclub",
        "church",
        "botanic garden",
        "punting",
        "entertainment",
        "sports centre",
    ],
    "aname": [
        "the fitzwilliam museum",
        "kings college",
        "the botanic garden",
        "the corn exchange",
        "castle gallery",
        "the arts theatre",
        "jesus green",
        "the round church",
        "the museum of technology",
        "parkside pools",
        "the science centre",
        "the scott polar museum",
    ],
    "car": [
        "black toyota",
        "white ford",
        "red skoda",
        "blue volkswagen",
        "grey audi",
        "silver tesla",
        "yellow lexus",
        "black bmw",
        "white honda",
        "red volvo",
    ],
    "name": [
        "sarah",
        "james",
        "mohammed",
        "li wei",
        "anna",
        "david",
        "priya",
        "tom",
        "maria",
        "oliver",
        "emma",
        "kenji",
        "fatima",
        "lucas",
        "chloe",
        "daniel",
    ],
    "ref": ["k29", "ab12cd", "x7y4", "qr83", "h0t3l5", "tr1122", "r55zz", "j9k2l", "m3n4", "zz90"],
    "money": ["£12", "£7.50", "£25", "£4.20", "£60", "£99", "£18.40", "£3", "£150", "£32.10"],
    "phone": ["01223 456789", "01223 302010", "07700 900123", "01223 355166", "01223 761212"],
    "postcode": ["cb2 1rf", "cb1 2ad", "cb4 3ax", "cb3 9et", "cb5 8dp", "cb2 3qb"],
    "dur": [
        "ten minutes",
        "twenty minutes",
        "half an hour",
        "an hour",
        "forty five minutes",
        "an hour and a half",
        "two hours",
        "fifteen minutes",
        "five minutes",
    ],
    "nights": ["one night", "two nights", "three nights", "four nights", "five nights", "a week"],
}

# Templates in the customer's and the agent's voice, written to cover the SpokenWOZ / MultiWOZ
# domains (restaurant, hotel, train, taxi, attraction, police, hospital) and small talk.
TEMPLATES: list[str] = [
    # restaurant
    "i am looking for a {price} restaurant in the {area}",
    "i'd like a {food} restaurant in the {area} please",
    "can you find me somewhere that serves {food} food",
    "is there a {price} {food} place near {street}",
    "there are {num} {food} restaurants in the {area}. do you have a price range in mind?",
    "{rname} serves {food} food and is in the {price} price range.",
    "{rname} is on {street}, would you like me to book a table?",
    "could you book a table for {num} people on {day} at {time_w}",
    "please book a table for {num} at {time_d} on {day}.",
    "i'm sorry, {rname} is fully booked at {time_d}. would {time_w} work instead?",
    "your table for {num} at {rname} is booked. the reference number is {ref}.",
    "the booking was successful. the table will be reserved for fifteen minutes.",
    "what is the address and the phone number of {rname}",
    "the address is {street}, postcode {postcode}, and the phone number is {phone}.",
    "do they have vegetarian options on the menu",
    "yes, they have a good selection of vegetarian and vegan dishes.",
    "actually can we make it {day} instead",
    "how about a different restaurant in the same area and price range",
    "i don't mind about the food, just somewhere {price}",
    "it doesn't matter, any area is fine",
    # hotel
    "i need a place to stay in the {area} with {amenity}",
    "i'm looking for a {stars} {htype} with {amenity} and {amenity}",
    "{hname} is a {price} {htype} in the {area} with {amenity}.",
    "does it have {amenity} and {amenity}",
    "yes, it has {amenity} and {amenity}. shall i book a room for you?",
    "book it for {num} people for {nights} starting from {day}",
    "i've booked {hname} for {nights} from {day}. your reference is {ref}.",
    "what time is check in and check out",
    "check in is from {time_d} and check out is before {time_d}.",
    "unfortunately the {htype} is full on {day}. would you like to try another day or a shorter stay?",
    "could you try {nights} instead",
    "how many stars does it have and is parking free",
    # train
    "i need a train from {city} to {city} on {day}",
    "i want to leave after {time_d} and arrive by {time_d}",
    "the {time_d} train from {city} arrives in {city} at {time_d}.",
    "there are {num} trains that match. what time would you like to leave?",
    "the journey takes {dur} and a ticket costs {money}.",
    "please book {num} tickets for me",
    "booking was successful, the total fee is {money} payable at the station. reference {ref}.",
    "what is the train id and the travel time",
    "is there an earlier train on {day} morning",
    "i'd like to arrive in {city} before {time_w}",
    # taxi
    "i need a taxi from {rname} to {hname}",
    "i need to get a taxi to leave {aname} after {time_d}",
    "i want to be picked up at {time_w} and arrive by {time_d}",
    "your taxi is booked. it's a {car} and the contact number is {phone}.",
    "a {car} will pick you up at {time_d}.",
    "where would you like to be picked up from",
    "and where are you going to",
    # attraction
    "are there any {attr} attractions in the {area}",
    "i'd like to visit a {attr} in the {area} of town",
    "{aname} is a {attr} in the {area}. entrance is free.",
    "the entrance fee is {money} and it's open from {time_d} to {time_d}.",
    "can i have the address and postcode of {aname}",
    "it is on {street} and the postcode is {postcode}.",
    "what else is there to do in the {area}",
    "there are lots of colleges, museums and parks. is there a type you prefer?",
    # police / hospital / misc services
    "i was robbed and i'm looking for the nearest police station",
    "the police station is on {street}, and the phone number is {phone}.",
    "i need the nearest hospital with an emergency department",
    "the hospital is on {street}, postcode {postcode}. their phone number is {phone}.",
    # dialogue glue
    "hello, i need some help planning my trip to {city}",
    "hi, customer service, how can i help you",
    "thank you for calling, how may i help you today?",
    "is there anything else i can help you with?",
    "no, that's all, thank you very much for your help",
    "you're welcome, have a nice day, goodbye",
    "thank you, goodbye",
    "okay great, thanks a lot",
    "sorry, could you repeat that please",
    "sure, let me check that for you",
    "just a moment please",
    "one second, i'm checking the system",
    "yes please, that would be great",
    "no thanks, i'll book it myself later",
    "um, i think so, yes",
    "uh, let me think about it",
    "hmm, that's a bit expensive, do you have anything cheaper",
    "oh okay, no problem",
    "right, and how far is it from the {area}",
    "it's about {dur} by bus or {dur} on foot.",
    "could i have the reference number please",
    "can you give me the phone number as well",
    "my name is {name} and my phone number is {phone}",
    "thanks {name}, i've put the booking under your name.",
    # chit-chat
    "how are you doing today",
    "i'm fine, thanks for asking. how about you?",
    "the weather is lovely today, isn't it?",
    "it's been raining all week here in {city}",
    "have you been to {city} before",
    "i'm visiting my friend {name} for the weekend",
    "we're going to a concert on {day} night",
    "i really enjoyed the food at {rname} last time",
    "what do you usually do at the weekend?",
    "i like reading, walking by the river and cooking with friends.",
    "that sounds like a great plan, i hope you have fun",
    "sorry to hear that, i hope things get better soon",
    "that's really interesting, tell me more about it",
    "i don't know, what do you think?",
    "to be honest, i'm not sure yet",
    "let's meet at {time_w} near {aname}",
    "my train was delayed by {dur} this morning",
    "could you speak a little more slowly please",
    "of course, no worries at all",
    "that makes sense, thank you for explaining",
]

# Longer, LLM-style sentences (the oracle text is written by a chat model, not transcribed).
LLM_STYLE: list[str] = [
    "Sure, I can help with that. What kind of food would you like, and do you have a price range in mind?",
    "I found {num} options in the {area}. {rname} is a {price} {food} restaurant on {street}.",
    "Great, I've booked a table for {num} at {rname} on {day} at {time_d}. Your reference is {ref}.",
    "Of course! {hname} has {amenity} and {amenity}, and it's in the {area}. Shall I book it?",
    "The next train to {city} leaves at {time_d} and arrives at {time_d}. Tickets are {money} each.",
    "Your taxi is confirmed: a {car} will collect you at {time_d}. The contact number is {phone}.",
    "Unfortunately that's fully booked. Would you like me to try {day} or a different time?",
    "Thanks for your help! Could you also tell me the postcode and the phone number, please?",
    "No problem at all. Is there anything else you need for your trip to {city}?",
    "I'd prefer something {price} near the {area}, ideally with {amenity}.",
    "That sounds perfect, thank you. Please go ahead and book it for {nights}.",
    "You're welcome! Enjoy your stay in {city}, and have a great day. Goodbye!",
    "Hmm, I'm not sure. Could you check whether {aname} is open on {day}?",
    "Yes, {aname} is open from {time_d} to {time_d}, and entry costs {money}.",
    "Okay, so that's {num} people on {day} at {time_w}. Is that right?",
]


# General spoken English, so oracle text outside the booking domains (MT-Bench style questions
# about science, history, cooking, work) does not fall back to single letters everywhere.
GENERAL: list[str] = [
    "The sun is a star, and the planets move around it in slightly oval orbits.",
    "Water boils at a lower temperature on a mountain because the air pressure is lower up there.",
    "Plants use sunlight, water and carbon dioxide to make sugar, and they release oxygen.",
    "A good way to learn a language is to practise a little every day and speak with real people.",
    "If you double the speed of a car, its stopping distance roughly becomes four times longer.",
    "The printing press made books cheaper, so many more people learned to read and write.",
    "Let's think step by step: first find the total, then divide it by the number of people.",
    "So the answer is twelve, because three groups of four make twelve in total.",
    "That depends on what you value most, the price, the quality or the time it saves you.",
    "In my opinion the main reason was economic, although politics also played a large part.",
    "Exercise, sleep and a balanced diet matter more than any single supplement.",
    "To make a simple tomato sauce, fry garlic in olive oil, add the tomatoes and simmer slowly.",
    "A computer program is a list of instructions that the machine follows one after another.",
    "The internet is a network of networks that share a common set of rules for sending data.",
    "Electric cars are quieter and cleaner in cities, but their batteries still take time to charge.",
    "Many birds migrate south in autumn and return in spring when food becomes easier to find.",
    "The story follows a young woman who leaves her village to find her missing brother.",
    "Shakespeare wrote comedies, tragedies and histories, and many of his phrases are still used today.",
    "The French Revolution began in seventeen eighty nine and changed European politics for ever.",
    "Interest rates affect how expensive it is to borrow money, so they influence spending and prices.",
    "When you feel stressed, a short walk or a few slow breaths can really help.",
    "Good teamwork needs clear goals, honest feedback and people who trust each other.",
    "A triangle's angles always add up to one hundred and eighty degrees.",
    "The probability of rolling a six with a fair die is one in six.",
    "Vaccines train the immune system to recognise a germ without making you ill.",
    "Climate change is mostly caused by burning coal, oil and gas, which adds carbon to the air.",
    "Recycling helps, but using fewer things in the first place helps even more.",
    "Before an interview, research the company, prepare a few stories and ask thoughtful questions.",
    "Music can change our mood quickly, which is why films use it so carefully.",
    "The moon has no light of its own; it reflects the light of the sun.",
    "Could you tell me a little more about what you need, so I can give a better answer?",
    "Honestly, I think both options are reasonable, but the second one is probably simpler.",
    "That's a great question. The short answer is yes, but there are a few exceptions.",
    "Imagine you have five apples and you give two away; you would have three left.",
    "The meeting has been moved to Thursday afternoon, so please update your calendar.",
    "I completely understand, and I'm sorry for the trouble this has caused you.",
    "Let me summarise: we agreed on the budget, the schedule and who is responsible for each part.",
    "My favourite season is autumn, when the leaves turn red and the evenings get cosy.",
    "The children played football in the garden until it got too dark to see the ball.",
    "She works as a nurse at the local hospital and often does night shifts.",
    "He bought a second hand bicycle and rides it to work every morning.",
    "We should leave early to avoid the traffic on the motorway.",
    "The library is closed on public holidays but open late on Wednesdays.",
    "Photosynthesis, gravity, evolution and electricity are ideas worth understanding well.",
    "Mathematics, physics, chemistry, biology, history, geography, literature and philosophy.",
    "January, February, March, April, May, June, July, August, September, October, November, December.",
    "Zero, one, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve, twenty, hundred.",
    "First, second, third, fourth, fifth, last, next, previous, earlier, later, soon, already.",
    "Because, although, however, therefore, unless, whether, while, since, until, instead.",
    "Happy, sad, angry, tired, excited, worried, surprised, curious, grateful, confident.",
    "Quickly, slowly, carefully, really, probably, certainly, usually, never, always, sometimes.",
    "Mother, father, sister, brother, friend, neighbour, colleague, teacher, doctor, student.",
    "Phone, laptop, screen, keyboard, message, email, website, password, account, download.",
    "Kitchen, bedroom, window, door, table, chair, garden, street, bridge, river, mountain, forest.",
    "Breakfast, lunch, dinner, coffee, tea, bread, cheese, chicken, rice, salad, soup, dessert.",
    "Would you rather travel by plane, by boat, or by train across the country?",
    "What would happen if everyone in the world planted one tree this year?",
    "Why do we dream, and do the stories in our dreams mean anything at all?",
    "Which is heavier, a kilogram of feathers or a kilogram of iron? Neither, they weigh the same.",
    "Write a short poem about the sea, the wind and a small boat going home.",
    "Explain the difference between weather and climate in simple words.",
    "The company hired three new engineers to build the mobile application.",
    "Our flight was cancelled, so we spent the night at an airport hotel.",
    "The doctor recommended rest, plenty of fluids and paracetamol for the fever.",
    "Please remember to bring your passport, your ticket and a photo identification.",
    "I'm calling about the order I placed last week; it hasn't arrived yet.",
    "The package should be delivered between nine and five on Tuesday.",
    "Press one for bookings, two for cancellations, or stay on the line to speak to someone.",
]


# Common English words, roughly most frequent first (written from general knowledge, no source
# text). With split_by_whitespace the unigram trainer only sees word frequencies, so lines drawn
# from this list with Zipf weights teach it the subwords of everyday English, not just the slot
# values of the templates above.
COMMON_WORDS_TEXT = """
the be to of and a in that have i it for not on with he as you do at this but his by from they we
say her she or an will my one all would there their what so up out if about who get which go me when
make can like time no just him know take people into year your good some could them see other than
then now look only come its over think also back after use two how our work first well way even new
want because any these give day most us is are was were been has had did does said going got made
i'm you're it's that's there's don't can't won't i'll i'd i've we'll let's isn't what's thing man
woman child world life hand part place case week company system program question government number
night point home water room mother area money story fact month lot right study book eye job word
business issue side kind head house service friend father power hour game line end member law car
city community name president team minute idea kid body information school face others level office
door health person art war history party result change morning reason research girl guy moment air
teacher force education food evening table phone address ticket train taxi hotel restaurant booking
reference price centre town street station airport museum college park theatre cinema hospital
police find tell ask seem feel try leave call need mean keep let begin help talk turn start show
hear play run move live believe hold bring happen write provide sit stand lose pay meet include
continue set learn lead understand watch follow stop create speak read allow add spend grow open
walk win offer remember love consider appear buy wait serve die send expect build stay fall cut
reach kill remain suggest raise pass sell require report decide pull check arrive travel visit
cancel confirm prefer recommend enjoy thank welcome choose reserve pick drive cost eat drink sleep
cook clean wash wear carry catch close finish fix hope guess miss plan print share sign smile solve
teach touch wonder worry great little own old big high different small large next early young
important few public bad same able last long best sure free better true whole real full special easy
clear recent certain personal red difficult available likely short single medical current wrong
private past foreign fine common poor natural significant similar hot dead central happy serious
ready simple left physical general environmental financial blue democratic dark various entire legal
religious cold final main green nice huge popular traditional cultural quiet cheap expensive modern
perfect lovely wonderful friendly comfortable convenient busy nearby local famous fresh delicious
healthy helpful interesting boring beautiful tired hungry late fast slow quick warm cool bright
empty heavy light soft strong weak rich safe very really still never always often sometimes usually
again already maybe perhaps probably actually especially exactly finally quickly slowly together
almost enough away else instead quite rather soon today tomorrow yesterday tonight later ago ever
once twice anyway however otherwise certainly definitely absolutely basically honestly hopefully
luckily unfortunately okay yes yeah yep nope um uh hmm oh ah alright please thanks sorry hello hi
hey bye goodbye wow something anything nothing everything someone anyone everyone nobody somewhere
anywhere everywhere nowhere myself yourself himself herself itself ourselves themselves whose whom
whatever whenever wherever whichever monday tuesday wednesday thursday friday saturday sunday
weekend january february march april may june july august september october november december spring
summer autumn winter zero three four five six seven eight nine ten eleven twelve thirteen fourteen
fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety
hundred thousand million half quarter breakfast lunch dinner coffee tea wine beer juice bread butter
cheese egg chicken beef pork fish rice pasta pizza salad soup sandwich burger dessert cake fruit
apple orange vegetable potato tomato option options couple suits interested sort type range mind
details contact email website postcode location directions distance minutes hours nights days weeks
rooms guests adults children parking wifi internet stars rating reviews menu dishes cuisine
vegetarian vegan allergy answer problem example choice decision difference situation experience
opportunity relationship conversation future present reality truth
"""
COMMON_WORDS: list[str] = COMMON_WORDS_TEXT.split()


PROPER_SLOTS = frozenset({"food", "street", "rname", "hname", "day", "city", "aname", "name"})


def fill(template: str, rng: random.Random, *, proper: bool = False) -> str:
    """Fill every ``{slot}`` independently (two ``{amenity}`` slots may differ, which is fine).

    ``proper`` title-cases names, days and cuisines the way a chat model writes them; STT-style
    lines keep them lowercase.
    """
    out: list[str] = []
    rest = template
    while "{" in rest:
        head, _, tail = rest.partition("{")
        slot, _, rest = tail.partition("}")
        out.append(head)
        value = rng.choice(SLOTS[slot])
        if proper and slot in PROPER_SLOTS:
            value = " ".join(w.capitalize() for w in value.split())
        out.append(value)
    out.append(rest)
    return "".join(out)


def transcript_style(text: str) -> str:
    """What an STT transcript of the sentence looks like: lowercase, no punctuation."""
    keep = "".join(c if c.isalnum() or c in " '" else " " for c in text.lower())
    return " ".join(keep.split())


def llm_style(text: str) -> str:
    """What a chat model writes: capitalised sentences, "I", curly apostrophes sometimes."""
    words = text.split(" ")
    words = [("I" + w[1:] if w in {"i", "i'm", "i'd", "i've", "i'll"} else w) for w in words]
    s = " ".join(words)
    s = ". ".join(part[:1].upper() + part[1:] for part in s.split(". "))
    if s and s[-1] not in ".?!":
        s += "?" if s.split(" ")[0].lower() in {"can", "could", "is", "are", "do", "does", "what"} else "."
    return s


ZIPF_WEIGHTS = [1.0 / (rank + 20) for rank in range(len(COMMON_WORDS))]


def common_word_line(rng: random.Random) -> str:
    """8-16 words from COMMON_WORDS, Zipf-weighted by rank, some capitalised as in LLM text."""
    n = rng.randint(8, 16)
    words = rng.choices(COMMON_WORDS, weights=ZIPF_WEIGHTS, k=n)
    words = [
        "I" + w[1:] if w == "i" or w.startswith("i'") else (w.capitalize() if rng.random() < 0.12 else w)
        for w in words
    ]
    return " ".join(words)


def generate_corpus(n_lines: int = CORPUS_LINES, seed: int = CORPUS_SEED) -> list[str]:
    """Deterministic corpus: a seeded mix of transcript-style, plain and LLM-style lines."""
    rng = random.Random(seed)
    lines: list[str] = []

    def curly(text: str) -> str:
        # chat models often write typographic apostrophes; keep both forms in the corpus
        return text.replace("'", "\u2019") if rng.random() < 0.3 else text

    while len(lines) < n_lines:
        r = rng.random()
        if r < SALAD_SHARE:
            lines.append(curly(common_word_line(rng)))
            continue
        r = rng.random()
        if r < 0.15:
            lines.append(curly(fill(rng.choice(LLM_STYLE), rng, proper=True)))
        elif r < 0.3:
            g = rng.choice(GENERAL)
            lines.append(transcript_style(g) if rng.random() < 0.4 else curly(g))
        elif r < 0.55:
            lines.append(transcript_style(fill(rng.choice(TEMPLATES), rng)))
        elif r < 0.8:
            lines.append(curly(llm_style(fill(rng.choice(TEMPLATES), rng, proper=True))))
        else:
            # two turns on one line, like a short exchange in a context window
            a = llm_style(fill(rng.choice(TEMPLATES), rng, proper=True))
            b = llm_style(fill(rng.choice(TEMPLATES), rng, proper=True))
            lines.append(curly(f"{a} {b}"))
    return lines


# --------------------------------------------------------------------------------------------
# Training and measurement
# --------------------------------------------------------------------------------------------


def train(lines: Iterable[str]) -> bytes:
    """Train the model in memory and return its serialized bytes."""
    spm.set_random_generator_seed(TRAIN_SEED)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(lines)), model_writer=buf, minloglevel=2, **TRAINER_OPTIONS
    )
    return buf.getvalue()


def tokens_per_word(sp: spm.SentencePieceProcessor, texts: Iterable[str]) -> tuple[float, int, int]:
    n_tok = n_words = 0
    for text in texts:
        n_tok += len(sp.encode(text))
        n_words += len(text.split())
    return (n_tok / n_words if n_words else float("nan")), n_tok, n_words


def transcript_utterances(path: Path) -> list[str]:
    """Runs of same-speaker words joined into lines (roughly how STT text would be fed)."""
    rows = json.loads(path.read_text())
    out: list[str] = []
    cur: str | None = None
    buf: list[str] = []
    for r in rows:
        if r["speaker"] != cur and buf:
            out.append(" ".join(buf))
            buf = []
        cur = r["speaker"]
        buf.append(str(r["word"]))
    if buf:
        out.append(" ".join(buf))
    return out


def report(model: bytes) -> None:
    """Print tokens per word on the demo and (when present) the shared SpokenWOZ samples."""
    sp = spm.SentencePieceProcessor(model_proto=model)
    sets: list[tuple[str, list[str]]] = []
    if DEMO_TEXT.exists():
        sets.append(("demo transcript", transcript_utterances(DEMO_TEXT)))
    if DEMO_ORACLE.exists():
        sets.append(
            ("demo oracle predictions", [e["prediction"] for e in json.loads(DEMO_ORACLE.read_text())])
        )
    if SHARED_TEXT.is_dir():
        for p in sorted(SHARED_TEXT.glob("*.json")):
            sets.append((f"spokenwoz {p.stem} transcript", transcript_utterances(p)))
        pred: list[str] = []
        for p in sorted((SHARED_TEXT.parent / "oracle_raw").glob("*.json")):
            pred += [e["prediction"] for e in json.loads(p.read_text())]
        if pred:
            sets.append(("spokenwoz oracle predictions", pred))
    for name, texts in sets:
        tpw, nt, nw = tokens_per_word(sp, texts)
        print(f"{name:36s} {tpw:.3f} tokens/word ({nt} tokens / {nw} words)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regen-corpus", action="store_true", help="rewrite the corpus from templates")
    ap.add_argument("--check-determinism", action="store_true", help="train twice, compare bytes")
    ap.add_argument("--out", type=Path, default=MODEL)
    args = ap.parse_args(argv)
    if args.regen_corpus or not CORPUS.exists():
        CORPUS.write_text("\n".join(generate_corpus()) + "\n", encoding="utf-8")
        print(f"wrote {CORPUS.relative_to(ROOT)}")
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    model = train(lines)
    if args.check_determinism:
        again = train(lines)
        if again != model:
            print("NOT deterministic: two builds differ", file=sys.stderr)
            return 1
        print("deterministic: two builds are byte-identical")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(model)
    sp = spm.SentencePieceProcessor(model_proto=model)
    print(
        f"wrote {args.out} ({len(model)} bytes, vocab {sp.get_piece_size()}, "
        f"sha256 {hashlib.sha256(model).hexdigest()[:16]}); pad id 3 = {sp.id_to_piece(3)!r} "
        f"control={sp.is_control(3)}"
    )
    report(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
