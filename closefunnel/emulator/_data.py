"""
The emulator's organizations: pure, seeded functions from a config to a :class:`Dataset`.

Two datasets exist. ``docs-example`` is a handful of opportunities chosen so that the
request printed on Close's "Get a funnel report (totals)" page gets exactly the response
printed there, computed through the same funnel semantics as every other report (so the
page doubles as a check of those semantics). ``demo`` is a seeded organization of any size
for demos, tests and benchmarks. Same seed, same data: everything random comes from one
``random.Random`` per purpose, never from the global one.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final, Literal, TypeAlias

import attrs

from closefunnel.emulator._config import EmulatorConfig

__all__ = [
    "Dataset",
    "Group",
    "Opportunity",
    "Organization",
    "SavedSearch",
    "StatusType",
    "build_dataset",
    "make_id",
]

StatusType: TypeAlias = Literal["active", "won", "lost"]
ValuePeriod: TypeAlias = Literal["one_time", "monthly", "annual"]

_BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DAY: Final = 86_400.0


def make_id(rng: random.Random, prefix: str, length: int = 22) -> str:
    """A Close-looking id: *prefix*, an underscore, then base62 drawn from *rng*."""
    return f"{prefix}_{''.join(rng.choices(_BASE62, k=length))}"


@attrs.frozen(kw_only=True)
class Status:
    """An opportunity status of a pipeline (``type`` is active, won or lost)."""

    id: str
    label: str
    type: StatusType


@attrs.frozen(kw_only=True)
class PipelineData:
    """A pipeline and its ordered statuses (active ones first, then won and lost)."""

    id: str
    name: str
    statuses: tuple[Status, ...]

    def status_of(self, kind: StatusType) -> Status:
        """The first status of type *kind*."""
        return next(status for status in self.statuses if status.type == kind)

    def to_json(self) -> dict[str, object]:
        """The object ``GET /pipeline/`` lists."""
        return {
            "id": self.id,
            "name": self.name,
            "statuses": [{"id": s.id, "label": s.label, "type": s.type} for s in self.statuses],
        }


@attrs.frozen(kw_only=True)
class UserData:
    """A user of the organization."""

    id: str
    first_name: str
    last_name: str
    email: str

    def to_json(self) -> dict[str, object]:
        """The object ``GET /user/`` lists."""
        return {
            "id": self.id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "email": self.email,
        }


@attrs.frozen(kw_only=True)
class Group:
    """A user group: ``users`` in a report's body may name it instead of its members."""

    id: str
    name: str
    user_ids: tuple[str, ...]


@attrs.frozen(kw_only=True)
class SavedSearch:
    """A saved search (Smart View): a fixed set of opportunity ids, for ``query``."""

    id: str
    name: str
    opportunity_ids: frozenset[str]


@attrs.frozen(kw_only=True)
class Opportunity:
    """
    One opportunity, with the fields the funnel needs precomputed.

    ``closed`` is when it was won or lost (None while active); ``annualized_value`` is
    in cents (monthly x 12, annual and one-time as is).
    """

    id: str
    pipeline_id: str
    user_id: str
    status_id: str
    status_type: StatusType
    value: int
    value_period: ValuePeriod
    created: datetime
    closed: datetime | None

    @property
    def annualized_value(self) -> int:
        """Cents per year: monthly values x 12, annual and one-time values as they are."""
        return self.value * 12 if self.value_period == "monthly" else self.value


@attrs.frozen(kw_only=True)
class Organization:
    """The organization the keys belong to (``GET /me/`` lists it)."""

    id: str
    name: str


def _by_creation(
    _: object, attribute: attrs.Attribute[tuple[Opportunity, ...]], value: tuple[Opportunity, ...]
) -> None:
    # The report index relies on this order instead of sorting every series again.
    for before, after in itertools.pairwise(value):
        if after.created < before.created:
            raise ValueError(f"{attribute.name} must be sorted by creation time")


@attrs.frozen(kw_only=True)
class Dataset:
    """
    Everything an emulator serves: organization, credentials, pipelines, users, groups,
    saved searches and opportunities (sorted by creation time).
    """

    organization: Organization
    api_keys: tuple[str, ...] = attrs.field(repr=False)
    token: str = attrs.field(repr=False)
    now: datetime
    pipelines: tuple[PipelineData, ...]
    users: tuple[UserData, ...]
    groups: tuple[Group, ...]
    saved_searches: tuple[SavedSearch, ...]
    opportunities: tuple[Opportunity, ...] = attrs.field(repr=False, validator=_by_creation)

    def pipeline(self, pipeline_id: str) -> PipelineData | None:
        """The pipeline with *pipeline_id*, or None."""
        return next((p for p in self.pipelines if p.id == pipeline_id), None)

    def saved_search(self, search_id: str) -> SavedSearch | None:
        """The saved search with *search_id*, or None."""
        return next((s for s in self.saved_searches if s.id == search_id), None)

    def expand_users(self, ids: Sequence[str]) -> frozenset[str]:
        """
        The user ids *ids* stands for: listed users plus members of listed groups, or every
        user when *ids* is empty. Unknown ids match no one.
        """
        if not ids:
            return frozenset(u.id for u in self.users)
        groups = {g.id: g.user_ids for g in self.groups}
        known = {u.id for u in self.users}
        out: set[str] = set()
        for item in ids:
            if item in groups:
                out.update(groups[item])
            elif item in known:
                out.add(item)
        return frozenset(out)


def _credentials(seed: int, count: int) -> tuple[tuple[str, ...], str]:
    """*count* API keys and the OAuth token, from their own seeded stream (token first)."""
    rng = random.Random(f"closefunnel-emulator-keys-{seed}")
    token = make_id(rng, "oauth", 40)
    keys = tuple(f"{make_id(rng, 'api')}.{make_id(rng, 'sk', 22)[3:]}" for _ in range(count))
    return keys, token


def build_dataset(config: EmulatorConfig, *, now: datetime | None = None) -> Dataset:
    """
    The dataset *config* names, with its clock at *now* (default: ``config.now`` or the
    real time). Pure apart from reading the clock when neither is given.
    """
    clock = now or config.now or datetime.now(UTC)
    if config.dataset == "docs-example":
        return _docs_example(config, clock)
    return _demo(config, clock)


# --- docs-example --------------------------------------------------------------------------

_DOCS_PIPELINE: Final = "pipe_4vukv2FUlFh9FDiVYAop1U"
_DOCS_SEARCH: Final = "save_ZVc26G33JTNiDNEFdZhBQAONg9cJHleAAHqBJakf239"
_DOCS_USER_1: Final = "user_N6KhMpzHRCYQHdn4gRNIFNN5JExnsrprKA6ekxM63XA"
_DOCS_USER_2: Final = "user_Ova4RGFG7pztSeJiiMFdN7O2MFl71nD0uGO3bIOo4Wk"


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _docs_example(config: EmulatorConfig, now: datetime) -> Dataset:
    keys, token = _credentials(config.seed, config.keys)
    other_user = "user_3bYwLdQzH8sJt1mR0aKc5FvE7gXo2NpU9iTy4WqZ6eD"
    pipeline = PipelineData(
        id=_DOCS_PIPELINE,
        name="Sales",
        statuses=(
            Status(
                id="stat_docsActiveQualified0000000000000000000", label="Qualified", type="active"
            ),
            Status(id="stat_docsWon000000000000000000000000000000000", label="Won", type="won"),
            Status(id="stat_docsLost00000000000000000000000000000000", label="Lost", type="lost"),
        ),
    )
    other_pipeline = PipelineData(
        id="pipe_2kM9zQ4rT7vX1bN8cJ5hW3",
        name="Renewals",
        statuses=(
            Status(
                id="stat_docsRenewActive00000000000000000000000000", label="Open", type="active"
            ),
            Status(id="stat_docsRenewWon00000000000000000000000000000", label="Won", type="won"),
            Status(id="stat_docsRenewLost0000000000000000000000000000", label="Lost", type="lost"),
        ),
    )

    def opp(
        oid: str,
        user: str,
        created: str,
        closed: str | None,
        kind: StatusType,
        *,
        value: int = 1_000_000,
        period: ValuePeriod = "one_time",
        pipe: PipelineData = pipeline,
    ) -> Opportunity:
        return Opportunity(
            id=oid,
            pipeline_id=pipe.id,
            user_id=user,
            status_id=pipe.status_of(kind).id,
            status_type=kind,
            value=value,
            value_period=period,
            created=_utc(created),
            closed=_utc(closed) if closed else None,
        )

    opportunities = [
        # The two opportunities of the docs page's response: one won an hour after it was
        # created, inside the range; one created before the range and lost inside it.
        opp(
            "oppo_docsWonInRange",
            _DOCS_USER_1,
            "2019-01-02T09:00:00Z",
            "2019-01-02T10:00:00Z",
            "won",
        ),
        opp(
            "oppo_docsLostInRange",
            _DOCS_USER_2,
            "2018-12-20T15:30:00Z",
            "2019-01-04T12:00:00Z",
            "lost",
            period="annual",
        ),
        # Everything below is outside the docs request's selection, each for one reason.
        opp(
            "oppo_docsClosedBefore",
            _DOCS_USER_1,
            "2018-12-01T00:00:00Z",
            "2018-12-28T00:00:00Z",
            "won",
        ),
        opp("oppo_docsCreatedAtEnd", _DOCS_USER_1, "2019-01-08T00:00:00Z", None, "active"),
        opp("oppo_docsNotInSearch", _DOCS_USER_2, "2019-01-03T00:00:00Z", None, "active"),
        opp(
            "oppo_docsOtherUser", other_user, "2019-01-03T00:00:00Z", "2019-01-05T00:00:00Z", "won"
        ),
        opp(
            "oppo_docsOtherPipeline",
            _DOCS_USER_1,
            "2019-01-02T00:00:00Z",
            "2019-01-03T00:00:00Z",
            "won",
            pipe=other_pipeline,
        ),
        opp(
            "oppo_docsMonthlyLater",
            _DOCS_USER_2,
            "2019-02-01T00:00:00Z",
            "2019-03-15T00:00:00Z",
            "won",
            value=50_000,
            period="monthly",
        ),
    ]
    opportunities.sort(key=lambda o: (o.created, o.id))
    in_search = frozenset(o.id for o in opportunities if o.id != "oppo_docsNotInSearch")
    users = (
        UserData(id=_DOCS_USER_1, first_name="Ada", last_name="Lovelace", email="ada@example.com"),
        UserData(id=_DOCS_USER_2, first_name="Alan", last_name="Turing", email="alan@example.com"),
        UserData(id=other_user, first_name="Grace", last_name="Hopper", email="grace@example.com"),
    )
    return Dataset(
        organization=Organization(id="orga_docsExampleOrganization000000000000000", name="Example"),
        api_keys=keys,
        token=token,
        now=now,
        pipelines=(pipeline, other_pipeline),
        users=users,
        groups=(
            Group(id="group_docsFounders", name="Founders", user_ids=(_DOCS_USER_1, _DOCS_USER_2)),
        ),
        saved_searches=(
            SavedSearch(id=_DOCS_SEARCH, name="Docs example", opportunity_ids=in_search),
            SavedSearch(
                id="save_docsEverything",
                name="Everything",
                opportunity_ids=frozenset(o.id for o in opportunities),
            ),
        ),
        opportunities=tuple(opportunities),
    )


# --- demo ----------------------------------------------------------------------------------

_PIPELINE_NAMES: Final = ("Sales", "Renewals", "Partnerships", "Enterprise", "Channel", "Upsell")
_ACTIVE_STAGES: Final = ("Qualified", "Demo", "Proposal", "Negotiation")
_FIRST: Final = (
    "Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "John", "Margaret",
    "Ken", "Radia", "Dennis", "Hedy", "Tim", "Katherine", "Linus", "Sophie", "Guido",
)  # fmt: skip
_LAST: Final = (
    "Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "McCarthy",
    "Hamilton", "Thompson", "Perlman", "Ritchie", "Lamarr", "Berners-Lee", "Johnson",
    "Torvalds", "Wilson", "van Rossum",
)  # fmt: skip
_GROUP_NAMES: Final = ("Team East", "Team West", "Enterprise", "Founders")
_SEARCH_NAMES: Final = ("Big deals", "Monthly plans", "Inbound", "Q-end pushes")
_YEARS: Final = 3


def _demo(config: EmulatorConfig, now: datetime) -> Dataset:
    keys, token = _credentials(config.seed, config.keys)
    rng = random.Random(f"closefunnel-emulator-demo-{config.seed}")
    org = Organization(id=make_id(rng, "orga"), name="Demo Org")

    pipelines = []
    for index in range(config.pipelines):
        name = _PIPELINE_NAMES[index % len(_PIPELINE_NAMES)]
        if index >= len(_PIPELINE_NAMES):
            name = f"{name} {index // len(_PIPELINE_NAMES) + 1}"
        stages = _ACTIVE_STAGES[: 2 + index % 3]
        statuses = [Status(id=make_id(rng, "stat"), label=s, type="active") for s in stages]
        statuses.append(Status(id=make_id(rng, "stat"), label="Won", type="won"))
        statuses.append(Status(id=make_id(rng, "stat"), label="Lost", type="lost"))
        pipelines.append(PipelineData(id=make_id(rng, "pipe"), name=name, statuses=tuple(statuses)))

    users = []
    for index in range(config.users):
        first = _FIRST[index % len(_FIRST)]
        last = _LAST[(index * 7 + index // len(_FIRST)) % len(_LAST)]
        suffix = "" if index < len(_FIRST) else str(index // len(_FIRST) + 1)
        email = f"{first}.{last}{suffix}@example.com".lower().replace(" ", "")
        users.append(
            UserData(id=make_id(rng, "user"), first_name=first, last_name=last, email=email)
        )

    n_groups = min(len(_GROUP_NAMES), max(1, config.users // 3))
    groups = tuple(
        Group(
            id=make_id(rng, "group"),
            name=_GROUP_NAMES[g],
            user_ids=tuple(
                u.id for i, u in enumerate(users) if i % n_groups == g or (g == 3 and i < 2)
            ),
        )
        for g in range(n_groups)
    )

    # Per-user skill makes win rates differ between users (~20-40% overall).
    skill = [rng.uniform(0.18, 0.42) for _ in users]
    pipe_weights = [1.0 / (i + 1) for i in range(len(pipelines))]
    end = now.timestamp()
    start = end - _YEARS * 365 * _DAY
    rand, expo, lognorm = rng.random, rng.expovariate, rng.lognormvariate
    user_ids = [u.id for u in users]
    created_list = sorted(start + rand() * (end - start) for _ in range(config.opportunities))
    pipe_choices = rng.choices(range(len(pipelines)), weights=pipe_weights, k=config.opportunities)
    user_choices = rng.choices(range(len(users)), k=config.opportunities)
    opportunities = []
    big: set[str] = set()
    monthly: set[str] = set()
    inbound: set[str] = set()
    quarter_end: set[str] = set()
    for created_ts, p_index, u_index in zip(created_list, pipe_choices, user_choices, strict=True):
        pipe = pipelines[p_index]
        roll = rand()
        period: ValuePeriod = "one_time" if roll < 0.5 else "monthly" if roll < 0.8 else "annual"
        if period == "monthly":
            value = int(lognorm(math.log(50_000), 0.8)) // 100 * 100 + 100
        else:
            value = int(lognorm(math.log(800_000), 0.9)) // 100 * 100 + 100
        # Days to a decision: from a few days to months (log-normal, median ~3 weeks).
        duration = max(600.0, lognorm(math.log(21 * _DAY), 1.0) + expo(1 / 3600))
        closed_ts: float | None = created_ts + duration
        if closed_ts is not None and (closed_ts >= end or rand() < 0.06):
            closed_ts = None  # still open (or stalled)
        kind: StatusType
        if closed_ts is None:
            kind = "active"
            status = rng.choice([s for s in pipe.statuses if s.type == "active"])
        else:
            kind = "won" if rand() < skill[u_index] else "lost"
            status = pipe.status_of(kind)
            closed_ts = float(math.floor(closed_ts))
        created_ts = float(math.floor(created_ts))
        oid = make_id(rng, "oppo")
        created = datetime.fromtimestamp(created_ts, UTC)
        opportunities.append(
            Opportunity(
                id=oid,
                pipeline_id=pipe.id,
                user_id=user_ids[u_index],
                status_id=status.id,
                status_type=kind,
                value=value,
                value_period=period,
                created=created,
                closed=None if closed_ts is None else datetime.fromtimestamp(closed_ts, UTC),
            )
        )
        annualized = value * 12 if period == "monthly" else value
        if annualized >= 1_000_000:
            big.add(oid)
        if period == "monthly":
            monthly.add(oid)
        if rand() < 0.35:
            inbound.add(oid)
        if created.month % 3 == 0 and created.day >= 15:
            quarter_end.add(oid)
    searches = tuple(
        SavedSearch(id=make_id(rng, "save", 43), name=name, opportunity_ids=frozenset(ids))
        for name, ids in zip(_SEARCH_NAMES, (big, monthly, inbound, quarter_end), strict=True)
    )
    return Dataset(
        organization=org,
        api_keys=keys,
        token=token,
        now=now,
        pipelines=tuple(pipelines),
        users=tuple(users),
        groups=groups,
        saved_searches=searches,
        opportunities=tuple(opportunities),
    )
