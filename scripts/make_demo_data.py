#!/usr/bin/env python3
"""Regenerate the bundled demo set, workbench/demo/demo_qa.jsonl: expense notes -> one-line JSON records.

The demo has to teach SmolLM2-135M something in 40 short CPU steps that anyone sees at a glance. A fixed
output format does that (the base model answers an expense note with chatter; the tuned one with the record),
and it can be scored by exact match. Notes are Korean and English in several phrasings; the record always has
the same keys, the date as MM-DD, the amount as a number and a category from a fixed Korean label set.
Deterministic (seeded): `python scripts/make_demo_data.py > workbench/demo/demo_qa.jsonl`.
"""

from __future__ import annotations

import json
import random

ROWS = 240
SEED = 7
# place -> category; categories are the fixed label set the tuned model answers with
PLACES = {
    "카페": ["스타벅스", "이디야", "투썸플레이스", "메가커피", "Starbucks", "Blue Bottle"],
    "식비": ["김밥천국", "맥도날드", "본죽", "교촌치킨", "McDonald's", "Subway"],
    "교통": ["카카오T", "티머니", "KTX", "쏘카", "Uber", "Lyft"],
    "장보기": ["이마트", "홈플러스", "GS25", "쿠팡", "Costco", "Trader Joe's"],
    "의료": ["온누리약국", "서울내과", "연세치과", "CVS Pharmacy", "Walgreens", "Kaiser Clinic"],
}
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
KOREAN_NOTES = [
    "{m}월 {d}일 {place}에서 {won}원 썼어",
    "{place} {won}원 결제 ({m}/{d})",
    "{m}월 {d}일에 {place}에서 카드로 {won}원 냈어요",
    "가계부: {m}월 {d}일 {place} {won}원",
]
ENGLISH_NOTES = [
    "Spent {won} won at {place} on {month} {d}",
    "{mon} {d}: {place}, ₩{won}",
    "Paid {place} KRW {won} on {d} {month}",
]


def make_row(rng: random.Random) -> tuple[str, str]:
    category = rng.choice(list(PLACES))
    place = rng.choice(PLACES[category])
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    amount = rng.randrange(1_000, 90_000, 100)
    won = f"{amount:,}" if rng.random() < 0.7 else str(amount)
    template = rng.choice(KOREAN_NOTES if rng.random() < 0.6 else ENGLISH_NOTES)
    note = template.format(m=month, d=day, place=place, won=won, month=MONTHS[month - 1],
                           mon=MONTHS[month - 1][:3])
    record = {"date": f"{month:02d}-{day:02d}", "place": place, "amount": amount, "category": category}
    return note, json.dumps(record, ensure_ascii=False)


def main() -> None:
    rng = random.Random(SEED)
    seen: set[str] = set()
    while len(seen) < ROWS:
        note, record = make_row(rng)
        if note in seen:
            continue
        seen.add(note)
        row = {"messages": [{"role": "user", "content": note}, {"role": "assistant", "content": record}]}
        print(json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main()
