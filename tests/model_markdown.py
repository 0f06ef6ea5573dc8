"""Answers written the way Gemma writes them, for the renderer's tests."""

# A menu answer as Gemma writes it: every construct the model uses, emoji and CJK included.
DISH = """\
### {n}. **Käsespätzle {n}** 🧀 (チーズ麺 {n})
* *Egg noodles* with melted cheese & fried onions; <vegetarian>, ~~€14.50~~ €12.90
* Ask: `ohne Speck` — 不要培根 😋
"""
MENU = (  # long enough for three messages
    "## 🍽️ Menu: Gasthaus Zur Post\n\nThis menu is in **German**. It is *important* to"
    " check the [DB timetable](https://www.bahn.de/fahrplan?a=1&b=2) for the last train.\n\n"
    + "\n".join(DISH.format(n=n) for n in range(60))
    + "\n> Service is included.\n> Tip 5–10 % if you liked it.\n\n"
    "```\nSchnitzel   19,90 €\nSpätzle     12,90 €\n```\n\nGuten Appetit! 🍻"
)

# A thought as Gemma writes one before answering (shown collapsed, cut at MAX_THOUGHT_CHARS).
THOUGHT = (
    "The user sent a photo of a German menu and asked which dishes have no pork.\n"
    "* **Käsespätzle**: cheese & onions, no meat -> fine.\n"
    "* *Schweinebraten* is pork (Schwein = pig); `Speck` = bacon <not vegetarian>.\n"
    "> Check: are prices < €15? Yes.\n" * 8
)
