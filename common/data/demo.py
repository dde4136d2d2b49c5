"""The embedded demo dataset: synthetic customer-support tickets from five organisations.

privatune must run end to end on a fresh machine with no network, so the default data
is generated here instead of downloaded.  It is built to exercise what federated
learning is for:

* five organisations (a bank, a hospital, a retailer, a telecom, a university), each
  with a different dominant ticket category and its own product vocabulary, so a
  ``natural`` partition by ``org`` is non-IID in both labels and wording;
* many templates per category, slot fillers, paraphrases, openers/closers, side
  remarks that mention *other* categories' keywords, mixed tickets and typo/casing
  noise, so no single keyword solves the task but a fine-tuned sentence encoder does
  well above chance.

Generation uses ``random.Random(seed)`` only, so the same seed gives the same rows in
the same order on every machine.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEMO_LABELS",
    "DEMO_ORGS",
    "make_demo_classification",
    "make_demo_instruction",
    "write_jsonl",
]

DEMO_LABELS: tuple[str, ...] = ("billing", "technical", "shipping", "account", "cancellation")


@dataclass(frozen=True)
class _Org:
    """One simulated organisation: its label mix and the words its customers use."""

    name: str
    weights: tuple[float, ...]  # one per DEMO_LABELS entry
    vocab: Mapping[str, tuple[str, ...]]


_ORGS: tuple[_Org, ...] = (
    _Org(
        "bank",
        (0.45, 0.12, 0.08, 0.23, 0.12),
        {
            "item": (
                "annual card fee",
                "wire transfer",
                "overdraft fee",
                "foreign transaction",
                "safe deposit box rental",
                "loan payment",
            ),
            "plan": (
                "Premier checking package",
                "overdraft protection",
                "Platinum credit card",
                "business banking plan",
                "savings account",
            ),
            "app": ("mobile banking app", "online banking site", "BankNow app"),
            "shipment": (
                "replacement debit card",
                "new credit card",
                "checkbook",
                "card reader",
                "PIN letter",
            ),
            "feature": (
                "transfers",
                "mobile check deposit",
                "e-statements",
                "bill pay",
                "card controls",
            ),
            "acct": ("online banking profile", "checking account", "account"),
        },
    ),
    _Org(
        "hospital",
        (0.22, 0.12, 0.08, 0.13, 0.45),
        {
            "item": ("MRI scan", "blood test", "ER visit", "physio session", "X-ray", "lab panel"),
            "plan": (
                "appointment",
                "follow-up appointment",
                "physiotherapy program",
                "telehealth subscription",
                "wellness membership",
            ),
            "app": ("patient portal", "MyChart app", "telehealth app"),
            "shipment": (
                "prescription refill",
                "glucose monitor",
                "home test kit",
                "copy of my medical records",
                "hearing aid",
            ),
            "feature": (
                "lab results",
                "appointment booking",
                "messages to my doctor",
                "prescription refills",
                "visit summaries",
            ),
            "acct": ("patient portal account", "patient record", "account"),
        },
    ),
    _Org(
        "retailer",
        (0.15, 0.08, 0.45, 0.12, 0.20),
        {
            "item": (
                "wireless headphones",
                "standing desk",
                "running shoes",
                "coffee maker",
                "winter jacket",
                "air fryer",
            ),
            "plan": (
                "Plus membership",
                "subscribe-and-save order",
                "extended warranty",
                "loyalty membership",
                "monthly snack box",
            ),
            "app": ("shop app", "website", "checkout page"),
            "shipment": ("package", "parcel", "standing desk", "headphones", "air fryer", "order"),
            "feature": ("wishlist", "cart", "order history", "gift cards", "returns page"),
            "acct": ("shopping account", "account", "loyalty profile"),
        },
    ),
    _Org(
        "telecom",
        (0.18, 0.45, 0.07, 0.10, 0.20),
        {
            "item": (
                "roaming package",
                "fiber installation",
                "new router",
                "international calls",
                "data top-up",
                "phone upgrade",
            ),
            "plan": (
                "fiber internet plan",
                "mobile contract",
                "TV bundle",
                "unlimited data plan",
                "home phone line",
            ),
            "app": ("MyTelco app", "self-service portal", "router admin page"),
            "shipment": ("SIM card", "router", "replacement modem", "new phone", "TV box"),
            "feature": (
                "data usage",
                "voicemail",
                "wifi settings",
                "roaming settings",
                "eSIM activation",
            ),
            "acct": ("customer account", "mobile line", "account"),
        },
    ),
    _Org(
        "university",
        (0.20, 0.18, 0.07, 0.45, 0.10),
        {
            "item": (
                "tuition",
                "housing deposit",
                "library fine",
                "parking permit",
                "exam resit fee",
                "lab fee",
            ),
            "plan": (
                "meal plan",
                "dorm housing contract",
                "gym membership",
                "course enrollment",
                "parking permit",
            ),
            "app": ("student portal", "learning platform", "course registration system"),
            "shipment": (
                "official transcript",
                "diploma",
                "student ID card",
                "textbook order",
                "graduation gown",
            ),
            "feature": (
                "course registration",
                "grade view",
                "assignment upload",
                "timetable",
                "exam sign-up",
            ),
            "acct": ("student account", "university login", "account"),
        },
    ),
)

#: Names of the organisations, in the order ``num_orgs`` takes them.
DEMO_ORGS: tuple[str, ...] = tuple(org.name for org in _ORGS)

# Templates deliberately borrow other categories' words (a billing ticket about a
# failed payment page, a technical ticket about the cancel button, ...), so that the
# label follows the customer's *request*, not a keyword.
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "billing": (
        "I was charged twice for the {item} on {date}. Please refund the duplicate {amount}.",
        "My latest invoice says {amount} but I was quoted {amount2}. Can someone explain "
        "the difference?",
        "There is a charge of {amount} on my statement from {date} that I don't recognise.",
        "How can I change the card you use to bill my {plan}?",
        "The payment for the {item} failed, but the money still left my bank account.",
        "Still waiting for the refund of {amount} for the {item}, it's been {days} days.",
        "Could you send me an itemized receipt for the {item} from {date}?",
        "I can't pay the full {amount} at once. Is a payment plan possible?",
        "Why did the price of my {plan} go up this month without any notice?",
        "The promo price of {amount2} ended and now I'm paying {amount}. I was told it would "
        "last a year.",
        "Autopay took {amount} from me twice this month.",
        "Will I get a late fee if I pay the {amount} balance on {date}?",
        "I need an invoice with my company name on it for the {item}, for tax purposes.",
        "The discount wasn't applied and I paid full price for the {item} ({amount}).",
        "You billed me for the {item} but I never received or used it.",
        "My {acct} shows a negative balance of {amount}, what is this fee for?",
        "Can I get a credit for the days the service didn't work? That's at least {amount}.",
        "which payment methods do you accept for the {item}? is paypal ok",
        "The amount on the bill doesn't match what I agreed on the phone with {name}.",
        "I paid {amount} on {date} but it still shows as unpaid.",
        "Why am I paying {amount} for the {plan} when my neighbour pays {amount2}?",
    ),
    "technical": (
        "The {app} keeps crashing as soon as I open {feature}.",
        "I get error {code} every time I try to use {feature} in the {app}.",
        "Since the last update the {app} is stuck on the loading screen.",
        "Is something down? The {app} hasn't responded since {date}.",
        "The {app} says 'something went wrong' when I click on {feature}.",
        "After updating my phone to {os}, the {app} only shows a blank screen.",
        "The payment page gives me error {code} so I cannot pay for the {item}.",
        "The verification code never arrives by SMS, so I can't get past the login screen.",
        "Uploading documents fails at 99% every time, I tried three browsers.",
        "Notifications from the {app} stopped working on my {device}.",
        "{feature} is extremely slow, pages take over a minute to load.",
        "The download button for my {item} receipt does nothing.",
        "My {device} keeps disconnecting from the {app} every few minutes.",
        "Getting {code} when syncing {feature}. Cleared cache, reinstalled, nothing helps.",
        "The {app} logs me out randomly while I'm in the middle of {feature}.",
        "The tracking page throws an error so I can't see where my {shipment} is.",
        "The date picker in {feature} won't let me select anything after {date}.",
        "Your website doesn't load at all on my {device}, just a spinning wheel.",
        "I tried to cancel through the {app} but the button gives error {code}.",
        "Text in {feature} shows weird symbols instead of letters since {date}.",
        "{feature} on the {app} is broken on {os}, works on my laptop though.",
    ),
    "shipping": (
        "Where is my {shipment}? Tracking for order {order} hasn't moved since {date}.",
        "Order {order} is marked as delivered but nothing arrived at my door.",
        "My {shipment} arrived damaged, the box was completely crushed.",
        "Can I still change the delivery address for order {order}? I'm moving to {city}.",
        "It has been {days} days and I still haven't received my {shipment}.",
        "I received the wrong {shipment}; order {order} was for something else.",
        "Do you deliver to {city}, and how long does express delivery take?",
        "The courier returned my {shipment} to sender. How do I get it sent again?",
        "Only part of order {order} arrived, the rest is missing.",
        "I paid {amount} for express delivery but it came by standard post.",
        "Tracking number {tracking} shows 'delivery exception'. What does that mean?",
        "Can I pick up my {shipment} in person instead of waiting for the delivery?",
        "Nobody was home when the driver came, how do I reschedule the delivery?",
        "My {shipment} was left outside in the rain and is soaked.",
        "The delivery slot on {date} is too early for me, can it come in the afternoon?",
        "The {shipment} went to my old address even though I updated my {acct}.",
        "Is there any way to get the {shipment} faster? I need it before {date}.",
        "The parcel says it's held at customs. Do I need to do anything?",
        "Still waiting on my {shipment}, ordered {days} days ago and no tracking email.",
        "Driver left a note but no package. Order {order}.",
        "my {shipment} has been 'out for delivery' for {days} days now",
    ),
    "account": (
        "I can't log in to my {acct}; the password reset email never arrives.",
        "Please update the email address on my {acct} to {email}.",
        "How do I change the phone number linked to my {acct}?",
        "My {acct} got locked after too many login attempts.",
        "I'd like to add {name} as an authorized user on my {acct}.",
        "I got married and changed my name to {name}. How do I update my details?",
        "I see a login from {city} that wasn't me. Is my {acct} compromised?",
        "How do I turn on two-factor authentication for the {app}?",
        "I forgot my username for the {app}.",
        "I somehow have two accounts, can you merge them into one?",
        "The identity check keeps rejecting the photo of my ID.",
        "Can I get a copy of all the personal data you hold about me?",
        "My date of birth is wrong in my {acct}, it should be {date}.",
        "Who can see my {feature}? I want to change my privacy settings.",
        "I want to remove my old address from my {acct}.",
        "{name} used to manage this {acct} but has left; please transfer access to me.",
        "I'm not getting any emails from you, is my contact address right?",
        "How do I set a new security question?",
        "The {app} says my {acct} doesn't exist, but I've been a customer for years.",
        "Please change the mailing address on file, I moved to {city}.",
        "can you reset my pin, I think someone saw me type it",
    ),
    "cancellation": (
        "I want to cancel my {plan}, effective {date}.",
        "Please close my {acct} and delete my information.",
        "How do I cancel order {order} before it ships?",
        "I'm moving to {city} next month, so please end my {plan}.",
        "Turn off auto-renewal for my {plan}, I don't want to be charged again.",
        "What is the early termination fee if I end my {plan} now?",
        "I no longer need the {plan}. How do I stop it?",
        "We are switching to another provider. What's the process to terminate our contract?",
        "Can I pause my {plan} for a few months instead of cancelling?",
        "I signed up for the {plan} by mistake, please undo it and refund me.",
        "Please don't renew anything on my {acct} after {date}.",
        "I want out of the {plan}, it's not worth {amount} a month.",
        "How much notice do I have to give to end the {plan}?",
        "Cancel the {plan} I booked for {date}, I can't make it.",
        "I've tried calling twice to quit the {plan} and keep getting put on hold.",
        "Is there a way to end the {plan} online without phoning someone?",
        "My {relative} passed away, how do I close their {acct}?",
        "I'd like to withdraw from the {plan}.",
        "Stop my {plan} at the end of this billing period please.",
        "Please confirm that my {plan} has been cancelled, I haven't heard anything.",
        "no longer interested in the {plan}, take me off it",
    ),
}

_OPENERS: tuple[str, ...] = (
    "Hi,",
    "Hello,",
    "Hi there,",
    "Good morning,",
    "Hello team,",
    "Dear support,",
    "Hey -",
    "To whom it may concern,",
    "Quick question:",
    "URGENT:",
    "Hi, {first} here.",
    "Hello, I hope you can help.",
    "Good afternoon,",
)
_CLOSERS: tuple[str, ...] = (
    "Thanks.",
    "Thank you!",
    "Please advise.",
    "Regards, {name}",
    "Thanks in advance.",
    "Appreciate the help.",
    "Please get back to me asap.",
    "This is really frustrating.",
    "Cheers",
    "Best, {first}",
    "Kind regards",
)
# Side remarks mention other categories on purpose: they are noise the model must learn
# to ignore.
_ASIDES: tuple[str, ...] = (
    "I've been a customer for {years} years.",
    "I already reset my password, that's not the issue.",
    "My card payments otherwise go through fine.",
    "I don't want to cancel, I just want this fixed.",
    "The app itself works fine otherwise.",
    "My last delivery arrived on time.",
    "I called on {date} and spoke to {name} but nothing happened.",
    "My account number is {acctno}.",
    "Writing from my phone, sorry for typos.",
    "This is the second time I'm writing about this.",
    "I'm travelling until {date}, so email is best.",
    "Honestly I'm close to cancelling everything if this isn't sorted.",
    "The refund from last time arrived fine.",
    "I logged in without any problem today.",
)

_FIRST = (
    "Maria",
    "James",
    "Aisha",
    "Chen",
    "Olga",
    "David",
    "Priya",
    "Lucas",
    "Fatima",
    "Tom",
    "Sofia",
    "Kenji",
    "Grace",
    "Omar",
    "Emma",
    "Mateo",
    "Nadia",
    "Ben",
)
_LAST = (
    "Garcia",
    "Smith",
    "Khan",
    "Wang",
    "Ivanova",
    "Brown",
    "Patel",
    "Silva",
    "Haddad",
    "Miller",
    "Rossi",
    "Tanaka",
    "Okafor",
    "Nasser",
    "Dubois",
    "Lopez",
    "Novak",
    "Cohen",
)
_CITIES = (
    "Leeds",
    "Austin",
    "Lyon",
    "Porto",
    "Denver",
    "Krakow",
    "Toronto",
    "Nairobi",
    "Melbourne",
    "Bristol",
    "Seattle",
    "Valencia",
    "Dublin",
    "Osaka",
)
_DEVICES = (
    "iPhone 13",
    "Pixel 7",
    "Galaxy S22",
    "iPad",
    "Windows laptop",
    "MacBook",
    "Chromebook",
    "work PC",
)
_OSES = ("iOS 17", "Android 14", "Windows 11", "macOS Sonoma", "the latest iOS")
_RELATIVES = ("father", "mother", "husband", "wife", "aunt", "grandfather")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "proton.me", "icloud.com")


class _Writer:
    """Renders tickets from templates with one ``random.Random`` for determinism."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    # -- slot fillers ------------------------------------------------------------------

    def amount(self) -> str:
        value = self.rng.choice((self.rng.randint(5, 99), self.rng.randint(100, 1500)))
        cents = self.rng.randint(0, 99)
        style = self.rng.randrange(5)
        if style == 0:
            return f"${value}.{cents:02d}"
        if style == 1:
            return f"€{value}"
        if style == 2:
            return f"£{value}.{cents:02d}"
        if style == 3:
            return f"{value} dollars"
        return f"USD {value}.{cents:02d}"

    def date(self) -> str:
        month, day = self.rng.choice(_MONTHS), self.rng.randint(1, 28)
        style = self.rng.randrange(5)
        if style == 0:
            return f"{month} {day}"
        if style == 1:
            return f"{self.rng.randint(1, 12)}/{day}"
        if style == 2:
            return self.rng.choice(
                ("yesterday", "last Tuesday", "Monday", "last week", "the weekend")
            )
        if style == 3:
            suffix = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd"}.get(day, "th")
            return f"the {day}{suffix} of {month}"
        return f"{day} {month[:3]}"

    def code(self) -> str:
        style = self.rng.randrange(4)
        if style == 0:
            return f"E-{self.rng.randint(100, 9999)}"
        if style == 1:
            return f"ERR_{self.rng.choice((400, 401, 403, 404, 408, 429, 500, 502, 503))}"
        if style == 2:
            return f"0x{self.rng.getrandbits(32):08X}"
        return f"code {self.rng.randint(1, 999)}"

    def order(self) -> str:
        if self.rng.random() < 0.5:
            letter = self.rng.choice(string.ascii_uppercase)
            return f"#{letter}{self.rng.randint(10000, 99999)}"
        return f"ORD-{self.rng.randint(100000, 999999)}"

    def slots(self, org: _Org) -> dict[str, str]:
        rng = self.rng
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        filled = {key: rng.choice(words) for key, words in org.vocab.items()}
        filled.update(
            first=first,
            name=f"{first} {last}",
            amount=self.amount(),
            amount2=self.amount(),
            date=self.date(),
            code=self.code(),
            order=self.order(),
            tracking="1Z" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=10)),
            days=str(rng.randint(3, 30)),
            years=str(rng.randint(2, 25)),
            city=rng.choice(_CITIES),
            device=rng.choice(_DEVICES),
            os=rng.choice(_OSES),
            relative=rng.choice(_RELATIVES),
            email=f"{first.lower()}.{last.lower()}{rng.randint(1, 99)}@{rng.choice(_DOMAINS)}",
            acctno=str(rng.randint(10_000_000, 99_999_999)),
        )
        return filled

    # -- message assembly --------------------------------------------------------------

    def ticket(
        self, org: _Org, label: str, template: str | None = None
    ) -> tuple[str, dict[str, str]]:
        """A full ticket for ``label``; returns the text and the slots used."""
        rng = self.rng
        slots = self.slots(org)
        parts = [(template or rng.choice(_TEMPLATES[label])).format_map(slots)]
        if rng.random() < 0.10:  # a mixed ticket: the main request comes first
            other = rng.choice([lab for lab in DEMO_LABELS if lab != label])
            extra = rng.choice(_TEMPLATES[other]).format_map(slots)
            parts.append(f"Also, {extra[0].lower()}{extra[1:]}")
        if rng.random() < 0.25:
            aside = rng.choice(_ASIDES).format_map(slots)
            parts.insert(rng.randrange(len(parts) + 1), aside)
        if rng.random() < 0.6:
            parts.insert(0, rng.choice(_OPENERS).format_map(slots))
        if rng.random() < 0.5:
            parts.append(rng.choice(_CLOSERS).format_map(slots))
        return self.noise(" ".join(parts)), slots

    def noise(self, text: str) -> str:
        """Casing, punctuation and typo noise, as in real tickets."""
        rng = self.rng
        words = [self.typo(w) if len(w) > 3 and rng.random() < 0.03 else w for w in text.split()]
        text = " ".join(words)
        roll = rng.random()
        if roll < 0.2:
            text = text.lower()
        elif roll < 0.23:
            text = text.upper()
        if rng.random() < 0.3:
            text = text.rstrip(".!")
        return text

    def typo(self, word: str) -> str:
        i = self.rng.randrange(1, len(word) - 1)
        kind = self.rng.randrange(3)
        if kind == 0:
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        if kind == 1:
            return word[:i] + word[i + 1 :]
        return word[:i] + word[i] + word[i:]


def _orgs(num_orgs: int) -> list[_Org]:
    """The first ``num_orgs`` organisations; beyond five, profiles repeat as ``bank-2``..."""
    if num_orgs < 1:
        raise ValueError(f"num_orgs must be at least 1, got {num_orgs}")
    orgs = []
    for i in range(num_orgs):
        base = _ORGS[i % len(_ORGS)]
        name = base.name if i < len(_ORGS) else f"{base.name}-{i // len(_ORGS) + 1}"
        orgs.append(_Org(name, base.weights, base.vocab))
    return orgs


def _label_counts(weights: tuple[float, ...], n: int) -> list[int]:
    """Exact per-label counts (largest remainder), so small demos keep the intended skew."""
    raw = [w / sum(weights) * n for w in weights]
    counts = [int(x) for x in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def make_demo_classification(
    num_examples: int = 3000, *, seed: int = 0, num_orgs: int = 5
) -> list[dict[str, Any]]:
    """Support tickets ``{"text", "label", "org"}``, split evenly among ``num_orgs`` orgs.

    Each org has its own dominant label (45% of its rows) and product vocabulary; over
    all five orgs every label has 15-24% of the rows.  Deterministic for a seed.
    """
    if num_examples < 0:
        raise ValueError(f"num_examples must be non-negative, got {num_examples}")
    writer = _Writer(seed)
    orgs = _orgs(num_orgs)
    rows: list[dict[str, Any]] = []
    for index, org in enumerate(orgs):
        size = num_examples // len(orgs) + (index < num_examples % len(orgs))
        labels = [
            label
            for label, count in zip(DEMO_LABELS, _label_counts(org.weights, size), strict=True)
            for _ in range(count)
        ]
        writer.rng.shuffle(labels)
        for label in labels:
            text, _ = writer.ticket(org, label)
            rows.append({"text": text, "label": label, "org": org.name})
    writer.rng.shuffle(rows)
    return rows


_CLASSIFY_INSTRUCTIONS: tuple[str, ...] = (
    "Classify the category of this support ticket. Answer with one word: billing, "
    "technical, shipping, account or cancellation.",
    "Which team should handle this ticket? Reply with billing, technical, shipping, account "
    "or cancellation.",
    "Read the customer message and give its category (billing, technical, shipping, "
    "account, cancellation).",
)
_EXTRACT_INSTRUCTIONS: tuple[str, ...] = (
    "Extract the order number from this message. Answer with the order number only.",
    "What is the order number mentioned in the ticket? Reply with just the number.",
)
_ORDER_TEMPLATES: tuple[tuple[str, str], ...] = tuple(
    (label, template)
    for label, templates in _TEMPLATES.items()
    for template in templates
    if "{order}" in template
)


def make_demo_instruction(num_examples: int = 200, *, seed: int = 0) -> list[dict[str, str]]:
    """Alpaca rows (instruction/input/output) for two small, learnable tasks.

    About two thirds ask for a ticket's category (a one-word answer), the rest ask for the
    order number in a ticket (copying a span).  Both are answerable from the input alone,
    so a small causal LM fine-tuned with LoRA visibly improves within a few rounds.
    """
    if num_examples < 0:
        raise ValueError(f"num_examples must be non-negative, got {num_examples}")
    writer = _Writer(seed)
    orgs = _orgs(len(_ORGS))
    rows: list[dict[str, str]] = []
    for index in range(num_examples):
        org = orgs[index % len(orgs)]
        if writer.rng.random() < 2 / 3:
            label = writer.rng.choice(DEMO_LABELS)
            text, _ = writer.ticket(org, label)
            instruction, output = writer.rng.choice(_CLASSIFY_INSTRUCTIONS), label
        else:
            label, template = writer.rng.choice(_ORDER_TEMPLATES)
            text, slots = writer.ticket(org, label, template)
            start = text.lower().find(slots["order"].lower())
            if start < 0:  # a typo hit the number: fall back to the clean template
                text, start = (
                    template.format_map(slots),
                    template.format_map(slots).find(slots["order"]),
                )
            # Answer with the number exactly as written, casing noise included, so the
            # task is pure copying.
            output = text[start : start + len(slots["order"])]
            instruction = writer.rng.choice(_EXTRACT_INSTRUCTIONS)
        rows.append({"instruction": instruction, "input": text, "output": output})
    return rows


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows as UTF-8 JSON Lines (creating parent folders) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
