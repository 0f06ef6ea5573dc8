"""Only what pyproject.toml cannot say (everything else is there): the UI strings, kept in
locales/ at the top of the repository, ship inside the bot package as bot/locales, since a
wheel has no checkout beside it (bot.settings looks there first, then in the checkout).
pyproject's automatic package discovery cannot add a package mapped from another folder, and
a listed set of packages would miss each new subpackage: hence these few lines."""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(
            include=["bot", "bot.*", "inference", "inference.*", "evaluation", "tools", "tools.*"]
        ),
        "bot.locales",
    ],
    package_dir={"bot.locales": "locales"},
)
