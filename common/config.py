"""One validated configuration for a run, parsed once at the boundary.

A run is described by a TOML file in kebab-case (``[training] lr = 0.01``)
and becomes one :class:`RunConfig` in snake_case. The same model is built from the
command line (``--set training.lr=1e-3``) and from Flower's ``run_config``
(a flat dict with dotted keys) so every entry point validates identically, before any
work starts, and reports *all* problems at once with the key that is wrong.
"""

from __future__ import annotations

import difflib
import re
import shlex
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from common.errors import ConfigError


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class _Section(BaseModel):
    """Base of every config section: kebab-case keys, unknown keys are errors."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=_kebab,
        populate_by_name=True,
        validate_assignment=True,
        frozen=False,
        # NaN and infinity are never meaningful settings (an infinite ε or lr would only
        # fail later, deep inside a library): reject them here, naming the key.
        allow_inf_nan=False,
    )


PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class ModelConfig(_Section):
    """The base model. Only local directories are read; nothing is downloaded."""

    path: str = Field(
        "default",
        description='Local Hugging Face model directory, or "default" for the packaged '
        "all-MiniLM-L6-v2 (sequence classification only).",
    )
    task: Literal["sequence-classification", "causal-lm"] = Field(
        "sequence-classification",
        description="sequence-classification (text -> label) or causal-lm (instruction tuning).",
    )
    max_length: PositiveInt = Field(
        64, description="Tokens per example; longer rows follow data.too-long."
    )
    dropout: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="Override the model's dropout probabilities (0 makes training "
        "deterministic while keeping train mode, which Opacus needs).",
    )
    pooling: Literal["auto", "cls", "mean"] = Field(
        "auto",
        description="How a sequence classifier reads the token states: 'cls' is the model's "
        "own head (BERT: its pooler over [CLS]); 'mean' averages the non-padding tokens, "
        "which is what sentence-transformers checkpoints such as the packaged "
        "all-MiniLM-L6-v2 were trained for (BERT-family models only); 'auto' follows the "
        "folder's 1_Pooling/config.json when it has one, else 'cls'. See common/pooling.py.",
    )
    quantization: Literal["none", "8bit", "4bit"] = Field(
        "none",
        description="QLoRA-style k-bit loading of the frozen base model. Only 'none' runs "
        "here: 8/4-bit loading needs bitsandbytes, see common/quantization.py for why it is "
        "refused on this CPU-only setup.",
    )


class MixtureComponent(_Section):
    """One instruction dataset of a multi-task mixture and its share of the rows."""

    source: str = Field(
        description='"demo" (the embedded task), "demo-general" (the embedded general '
        "instructions) or an instruction file/folder (JSONL, CSV, Parquet, save_to_disk)."
    )
    weight: PositiveFloat = Field(
        description="Relative share of the mixed rows (weights are normalised to sum to 1)."
    )
    format: Literal["auto", "jsonl", "csv", "parquet", "disk"] = "auto"


class DataConfig(_Section):
    """Where the clients' data comes from and how rows are validated."""

    source: str = Field(
        "demo",
        description='"demo" for the embedded generator, or a file/folder (JSONL, CSV, '
        "Parquet, datasets.save_to_disk) that the simulation partitions among clients.",
    )
    format: Literal["auto", "jsonl", "csv", "parquet", "disk"] = "auto"
    text_field: str = "text"
    label_field: str = "label"
    labels: list[str] | None = Field(
        None,
        description="The class labels, in id order. Needed on real nodes (each sees only its "
        "own rows); in simulation the default is every label found in data.source.",
    )

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, labels: list[str] | None) -> list[str] | None:
        """Labels map to class ids by position: a repeat would silently merge two ids."""
        if labels is None:
            return None
        repeated = sorted({x for x in labels if labels.count(x) > 1})
        if repeated:
            raise ValueError(f"labels {repeated} appear more than once; list each class once")
        if any(not x.strip() for x in labels):
            raise ValueError("labels must be non-empty strings")
        if len(labels) < 2:
            raise ValueError("a classifier needs at least two labels; list every class")
        return labels

    demo_examples: PositiveInt = Field(
        2000, description="Rows the demo generator makes (classification)."
    )
    client_eval_fraction: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="Share of each client's rows held out for federated evaluation.",
    )
    server_eval: str | None = Field(
        "demo",
        description='Held-out set evaluated on the server each round: "demo" (a disjoint '
        "demo sample), a file path, or none (empty string).",
    )
    server_eval_examples: PositiveInt = 400
    too_long: Literal["truncate", "drop", "reject"] = Field(
        "truncate", description="What to do with rows longer than model.max-length."
    )
    general_eval: str | None = Field(
        None,
        description='Forgetting check (causal-lm only): a general held-out set, "demo" (an '
        "embedded set of general instructions unrelated to the task) or an instruction "
        "file, scored on the server before training and after the last round. Not offered "
        "for classification: its head is trained for the task's labels only, so there is "
        "no general ability of the base model that the same metrics could measure.",
    )
    general_eval_examples: PositiveInt = Field(
        64, description='Rows of the "demo" general set (a file is used whole).'
    )
    mixture: list[MixtureComponent] = Field(
        default_factory=list,
        description="Multi-task mixture (causal-lm), the usual remedy for catastrophic "
        "forgetting: several instruction datasets sampled by weight, deterministically in "
        "training.seed, into one pool that is partitioned among the clients. Replaces "
        "data.source. No row is ever repeated (a repeated row would cost it twice the DP "
        "budget), so the pool is as large as the scarcest component allows.",
    )
    mixture_examples: PositiveInt | None = Field(
        None,
        description="Rows in the mixed pool (default: the most the components can supply "
        "at their weights without repeating a row).",
    )


class EvaluationConfig(_Section):
    """Generation-based metrics of causal LMs: greedy answers scored against references.

    ROUGE-L (rouge-score), BLEU (sacrebleu) and exact match (normalised) are computed on
    the server's held-out set, on clients' held-out splits (federated evaluation) and on
    data.general-eval. Generation costs one forward pass per new token on every
    evaluation, so it is bounded here.
    """

    generation_examples: int = Field(
        16,
        ge=0,
        description="Held-out rows answered per evaluation (the first ones of each held-out "
        "set); 0 turns generation metrics off.",
    )
    max_new_tokens: PositiveInt = Field(
        32, description="Longest generated answer, in tokens (greedy decoding)."
    )
    batch_size: PositiveInt = Field(8, description="Prompts generated together.")


class PartitionConfig(_Section):
    """How a simulation splits one dataset among virtual clients."""

    method: Literal["iid", "dirichlet", "shards", "natural"] = "natural"
    alpha: PositiveFloat = Field(0.5, description="Dirichlet concentration (lower = more skew).")
    shards_per_client: PositiveInt = 2
    column: str = Field("org", description="Column naming each row's owner, for natural.")


class LoraConfig(_Section):
    """The LoRA adapter trained on each client; only these weights are ever sent."""

    variant: Literal["lora", "ffa"] = Field(
        "lora",
        description='"ffa" is FFA-LoRA: every A matrix stays frozen at its shared seeded '
        "initialisation and only B (and the task head) is trained and sent, so averaging B is "
        "exactly averaging the update B·A, with half the traffic.",
    )
    r: PositiveInt = 8
    alpha: PositiveFloat = 16.0
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(
        None,
        description="Module names to adapt; default: the attention query/value projections "
        "the model family uses.",
    )
    ranks: list[PositiveInt] | None = Field(
        None,
        description="Heterogeneous ranks (federation.strategy = hetlora): client k trains "
        "rank ranks[k mod len], each at most lora.r, the rank of the global adapter. Clients "
        "with less compute or bandwidth train and send a smaller adapter.",
    )


class PeftSection(_Section):
    """Which parameter-efficient method is trained; only its weights are ever sent."""

    method: Literal["lora", "prompt-tuning", "prefix-tuning", "ia3", "bitfit"] = Field(
        "lora",
        description="lora (settings in [lora]); prompt-tuning (trainable soft-prompt "
        "embeddings prepended to the input); prefix-tuning (trainable key/value prefixes in "
        "every attention layer); ia3 (learned rescaling vectors of keys, values and the "
        "feed-forward input); bitfit (only the bias terms). Every one trains with DP-SGD.",
    )
    num_virtual_tokens: PositiveInt = Field(
        8, description="prompt-tuning and prefix-tuning: length of the learned prompt/prefix."
    )
    target_modules: list[str] | None = Field(
        None,
        description="ia3: modules whose output (or, for feed-forward ones, input) is "
        "rescaled; default: PEFT's choice for the model family (keys, values, FFN output).",
    )
    feedforward_modules: list[str] | None = Field(
        None,
        description="ia3: the subset of target-modules scaled on their input; default: PEFT's.",
    )


class TrainingConfig(_Section):
    """The local training each sampled client runs per round."""

    lr: PositiveFloat = 0.05
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    batch_size: PositiveInt = Field(
        16, description="Expected batch size (with DP, the Poisson sampling rate is B/N)."
    )
    local_steps: PositiveInt = Field(10, description="Optimizer steps per round per client.")
    proximal_mu: float = Field(
        0.0,
        ge=0.0,
        description="FedProx: after every optimizer step the adapter is pulled towards the "
        "round's global adapter by lr·mu·(w - w_global) (data-independent, so free under DP).",
    )
    seed: int = 0
    threads: PositiveInt = Field(1, description="torch threads per client process.")


class FederationConfig(_Section):
    """Rounds and sampling on the server."""

    num_clients: PositiveInt = Field(5, description="Virtual clients (simulation).")
    clients_per_round: PositiveInt = Field(
        3, description="Clients sampled for training each round."
    )
    min_clients: PositiveInt = Field(
        2,
        description="A round needs at least this many successful updates (not under "
        "central-dp, whose rounds are never voided: its mean has a fixed denominator).",
    )
    rounds: PositiveInt = 5
    strategy: str = Field("fedavg", description="Aggregation strategy, by registry name.")
    evaluate_clients: int = Field(
        0, ge=0, description="Clients sampled for federated evaluation each round (0: none)."
    )
    round_timeout: PositiveFloat | None = Field(
        None, description="Seconds to wait for replies in a round (none: wait)."
    )
    wait_for_clients: PositiveFloat = Field(
        300.0,
        description="Seconds the server waits for clients-per-round nodes to connect before "
        "it fails with a clear error.",
    )
    max_update_norm: PositiveFloat | None = Field(
        None,
        description="The server rejects (and logs, naming the client) any update whose L2 "
        "norm exceeds this, so one broken or malicious client cannot drag the global adapter "
        "away. None: no bound. Under secure aggregation the server sees only the sum, so the "
        "bound applies to the aggregate.",
    )
    max_update_bytes: PositiveInt | None = Field(
        None,
        description="The server rejects an update whose serialised arrays exceed this many "
        "bytes before decoding them. None: the largest a valid adapter update can be (float64 "
        "values plus array headers). Flower's own gRPC limit is 2 GiB per message. Under "
        "secure aggregation the server checks only the unmasked sum, which arrives as float64 "
        "(8 bytes a value).",
    )


class ServerOptimizerConfig(_Section):
    """How the server applies the round's mean delta (Reddi et al., adaptive FL).

    Unset values take each optimiser's default (Flower's legacy strategies' defaults).
    """

    name: Literal["fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"] = "fedavg"
    lr: PositiveFloat | None = Field(
        None, description="Server learning rate (fedavg/fedavgm: server_lr; others: eta)."
    )
    momentum: float | None = Field(None, ge=0.0, lt=1.0, description="fedavgm only.")
    beta_1: float | None = Field(None, ge=0.0, lt=1.0, description="fedadam, fedyogi.")
    beta_2: float | None = Field(None, ge=0.0, lt=1.0, description="fedadam, fedyogi.")
    tau: PositiveFloat | None = Field(None, description="Adaptivity (fedadam/yogi/adagrad).")

    def hyper(self) -> dict[str, float]:
        """Keyword arguments for server/strategy/server_opt.py, only those that were set."""
        lr_name = "server_lr" if self.name in ("fedavg", "fedavgm") else "eta"
        values = {
            lr_name: self.lr,
            "server_momentum": self.momentum,
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "tau": self.tau,
        }
        return {k: v for k, v in values.items() if v is not None}


class PrivacyConfig(_Section):
    """Client-side DP-SGD (Opacus). The unit of privacy is one example."""

    enabled: bool = True
    noise_multiplier: float | None = Field(
        None, ge=0.0, description="Fixed σ. Set this or target-epsilon, not both."
    )
    target_epsilon: PositiveFloat | None = Field(
        8.0,
        description="ε to reach after every round a client may take part in; σ is calibrated.",
    )
    delta: float = Field(1e-5, gt=0.0, lt=1.0)
    max_grad_norm: PositiveFloat = Field(1.0, description="Per-example clipping norm C.")
    budget_epsilon: PositiveFloat | None = Field(
        None,
        description="A client refuses a round that would take its ε above this "
        "(default: target-epsilon when set).",
    )
    min_noise_multiplier: float = Field(
        0.0,
        ge=0.0,
        description="A client refuses rounds whose σ (fixed or calibrated) is below this; "
        "a node's local policy can raise it.",
    )
    grad_sample_mode: Literal["hooks"] = Field(
        "hooks",
        description="Opacus per-sample gradient mode. Only hooks: measured on this CPU, "
        "ghost clipping costs a second backward pass (1.4-2.9x slower for LoRA).",
    )
    reproducible_noise: bool = Field(
        False,
        description="Research only: draw each client's DP noise and Poisson sampling from "
        "training.seed, the client and the round instead of OS entropy, so that a run "
        "repeats exactly. Whoever knows the seed (the coordinator chooses it) can then "
        "recompute the noise and subtract it: such a run is NOT private, and the report "
        "and summary.json say so. Deployed nodes refuse it unless their policy sets "
        "allow-reproducible-noise.",
    )
    share_training_metrics: bool = Field(
        False,
        description="Under DP or SecAgg+, clients also send their mean training loss and "
        "their counts of too-long rows, empty Poisson batches and values SecAgg+ would "
        "clip. Those come from the private rows without noise, so ε does not cover them "
        "(nor does SecAgg+, which hides only updates): off by default (the report then "
        "shows no training loss). Deployed nodes send them only if their policy sets "
        "share-training-metrics too.",
    )

    @model_validator(mode="after")
    def _one_noise_source(self) -> PrivacyConfig:
        if self.enabled and self.noise_multiplier is not None and self.target_epsilon is not None:
            if "target_epsilon" in self.model_fields_set:
                raise ValueError(
                    "set either privacy.noise-multiplier or privacy.target-epsilon, not both"
                )
            self.target_epsilon = None
        if self.enabled and self.noise_multiplier is None and self.target_epsilon is None:
            raise ValueError("privacy is enabled: set privacy.noise-multiplier or target-epsilon")
        return self

    @property
    def budget(self) -> float | None:
        """The ε a client never exceeds (None: no limit)."""
        if self.budget_epsilon is not None:
            return self.budget_epsilon
        return self.target_epsilon


class CentralDPConfig(_Section):
    """Central (user-level) DP: each client's whole update is clipped, the server adds noise.

    Protects a client's entire contribution (not only single examples) from whoever sees
    the global adapters, but NOT from the server, which sees the un-noised updates (use
    DP-SGD, [privacy], against the server). Clients are Poisson-sampled (each connected
    node with probability clients-per-round / nodes) and the released mean divides the
    sum of clipped updates plus N(0, (σC)²) by clients-per-round, whatever arrived: a
    missing update counts as zero (server/central_dp.py).
    """

    enabled: bool = False
    noise_multiplier: float = Field(1.0, ge=0.0, description="σ of the aggregate's noise.")
    clipping_norm: PositiveFloat = Field(
        0.5, description="Each client clips its adapter delta to this L2 norm."
    )


SECAGG_MODULUS = 2**32  # Flower's SecAgg+ modulus_range: masked sums are taken mod this


class SecureAggregationConfig(_Section):
    """Flower SecAgg+ on the client updates: the server learns only their weighted sum."""

    enabled: bool = False
    num_shares: float = Field(
        1.0,
        gt=0.0,
        description="Secret shares per client: ≤ 1 is a fraction of the sampled clients "
        "(1.0: everyone shares with everyone), > 1 a count. Fewer shares are faster but "
        "tolerate fewer dropouts.",
    )
    reconstruction_threshold: float = Field(
        0.66,
        gt=0.0,
        description="Shares needed to unmask a client (≤ 1: fraction of num-shares). Higher "
        "is more private, lower tolerates more dropouts. Must be a majority (> 0.5, or a "
        "count above half the shares): nodes refuse sessions whose threshold two disjoint "
        "groups of their peers could each reach.",
    )
    fixed_weight: bool = Field(
        False,
        description="Every client reports weight 1 instead of its example count (updates "
        "are then averaged with equal weights). Under DP a client's sampling rate, in its "
        "privacy history, still shows its row count to within one batch.",
    )
    max_weight: PositiveFloat | None = Field(
        None,
        description="Largest example count any client may report (SecAgg+ scales updates by "
        "count/max-weight). Computed from the partitions in simulation; required on real "
        "nodes unless fixed-weight = true.",
    )
    clipping_range: PositiveFloat | None = Field(
        None,
        description="SecAgg+ clips every scaled delta value to ±this before quantising. "
        "Default: calibrated from the optimiser, learning rate, local steps and central DP "
        "clipping; clients report any value that would be clipped.",
    )
    quantization_bits: int = Field(
        22, ge=8, le=24, description="Values are quantised to 2^bits levels."
    )
    on_failure: Literal["stop", "retry"] = Field(
        "stop",
        description="A round below the reconstruction threshold fails loudly: stop the run "
        "with a non-zero exit, or retry the round (up to max-retries).",
    )
    max_retries: int = Field(2, ge=0)


class SimulationConfig(_Section):
    """Flower simulation engine (Ray) resources."""

    cpus_per_client: PositiveFloat = 1.0
    total_cpus: PositiveInt | None = Field(None, description="CPUs Ray may use (default: all).")


class RunConfig(_Section):
    """Everything a run needs, validated once."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    peft: PeftSection = Field(default_factory=PeftSection)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    central_dp: CentralDPConfig = Field(default_factory=CentralDPConfig)
    server_optimizer: ServerOptimizerConfig = Field(default_factory=ServerOptimizerConfig)
    secure_aggregation: SecureAggregationConfig = Field(default_factory=SecureAggregationConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        fed = self.federation
        problems = []
        if fed.clients_per_round > fed.num_clients:
            problems.append(
                f"federation.clients-per-round ({fed.clients_per_round}) exceeds "
                f"federation.num-clients ({fed.num_clients}); lower it"
            )
        if fed.min_clients > fed.clients_per_round:
            problems.append(
                f"federation.min-clients ({fed.min_clients}) exceeds "
                f"federation.clients-per-round ({fed.clients_per_round}); lower it"
            )
        if fed.evaluate_clients > fed.num_clients:
            problems.append("federation.evaluate-clients exceeds federation.num-clients")
        if self.model.path == "default" and self.model.task != "sequence-classification":
            problems.append(
                'model.path "default" (MiniLM, an encoder) supports only '
                'model.task = "sequence-classification"; set model.path to a causal LM folder'
            )
        problems.extend(self._adapter_problems())
        problems.extend(_data_checks(self))
        problems.extend(self._secure_aggregation_problems())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _secure_aggregation_problems(self) -> list[str]:
        """SecAgg+ settings that would break its sums or its privacy, and what clashes."""
        sa, problems = self.secure_aggregation, []
        if not sa.enabled:
            return problems
        if self.central_dp.enabled:
            problems.append(
                "central-dp and secure-aggregation cannot be combined: central DP's "
                "accounting needs each client's participation to leave the others' updates "
                "in the sum, but under SecAgg+ nodes withhold their updates when too few "
                "peers remain; turn one off (DP-SGD, [privacy], protects against the server)"
            )
        clients = self.federation.clients_per_round
        if clients * 2**sa.quantization_bits >= SECAGG_MODULUS:
            most = (SECAGG_MODULUS - 1) // 2**sa.quantization_bits
            problems.append(
                f"secure-aggregation.quantization-bits = {sa.quantization_bits}: the sum of "
                f"{clients} clients' quantised values can reach {clients} × 2^"
                f"{sa.quantization_bits}, which wraps around SecAgg+'s modulus 2^32; lower "
                f"quantization-bits or keep federation.clients-per-round ≤ {most}"
            )
        threshold, shares = sa.reconstruction_threshold, sa.num_shares
        if threshold <= 1 and threshold <= 0.5:
            problems.append(
                f"secure-aggregation.reconstruction-threshold = {threshold:g}: must be a "
                "majority of the shares (> 0.5), so two disjoint groups of peers can never "
                "each unmask a node; nodes refuse sessions below it"
            )
        elif threshold > 1 and shares > 1 and threshold <= shares / 2:
            problems.append(
                f"secure-aggregation.reconstruction-threshold = {threshold:g} is not above "
                f"half of num-shares = {shares:g}; raise it"
            )
        return problems

    def _adapter_problems(self) -> list[str]:
        """Combinations of peft.method, lora.variant, lora.ranks and the strategy that clash."""
        problems = []
        method, lora = self.peft.method, self.lora
        if method != "lora" and lora.variant != "lora":
            problems.append(
                f'lora.variant = "{lora.variant}" applies to peft.method = "lora" only '
                f'(got peft.method = "{method}"); remove lora.variant'
            )
        hetlora = self.federation.strategy == "hetlora"
        if hetlora and method != "lora":
            problems.append(
                f'federation.strategy = "hetlora" aggregates LoRA matrices of different ranks; '
                f'it needs peft.method = "lora" (got "{method}")'
            )
        if hetlora and lora.variant == "ffa":
            problems.append(
                'federation.strategy = "hetlora" cannot use lora.variant = "ffa": clients of '
                "different ranks would not share the frozen A matrices FFA-LoRA relies on"
            )
        if hetlora and not lora.ranks:
            problems.append(
                'federation.strategy = "hetlora" needs lora.ranks, the clients\' ranks '
                "(e.g. [2, 4, 8]; each at most lora.r)"
            )
        if lora.ranks and not hetlora:
            problems.append(
                'lora.ranks (heterogeneous ranks) needs federation.strategy = "hetlora"'
            )
        if lora.ranks and max(lora.ranks) > lora.r:
            problems.append(
                f"lora.ranks: {max(lora.ranks)} exceeds lora.r = {lora.r}, the rank of the "
                "global adapter; raise lora.r or lower the ranks"
            )
        return problems

    @property
    def equal_weights(self) -> bool:
        """Clients report weight 1: to hide example counts, or because central DP needs it."""
        return self.secure_aggregation.fixed_weight or self.central_dp.enabled

    # ------------------------------------------------------------------ I/O

    def to_toml_dict(self) -> dict[str, Any]:
        """The config as kebab-case nested dicts, None values left out (TOML has no null)."""
        return _drop_none(self.model_dump(by_alias=True, mode="json"))

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_toml_dict())

    def to_flat(self) -> dict[str, Any]:
        """Flat dotted kebab-case keys, the shape of Flower's ``run_config``."""
        return dict(_flatten(self.to_toml_dict()))

    def to_set_string(self) -> str:
        """The whole config as one ``set`` value of ``key=value`` items (run_config).

        A deployed run's config must reach every SuperNode, which cannot read the
        coordinator's files; Flower's run_config carries it as this one string.
        """
        items = []
        for key, value in self.to_flat().items():
            items.append(shlex.quote(f"{key}={_inline_toml(value)}"))
        return " ".join(items)


def _inline_toml(value: Any) -> str:
    """One TOML value on one line; tables (``[[data.mixture]]`` items) as inline tables,
    which tomli_w would otherwise write as ``[[v]]`` sections."""
    import tomli_w

    if isinstance(value, Mapping):
        inner = ", ".join(f"{k} = {_inline_toml(v)}" for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline_toml(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).strip().removeprefix("v = ")


def _data_checks(config: RunConfig) -> list[str]:
    """Forgetting check and mixtures are for instruction tuning (see their descriptions).

    Whether mixture files exist and hold instruction rows is checked where the data is
    read (``common.data.mixture``): a deployed node validates this config too, and the
    coordinator's files are not on its disk.
    """
    data, problems = config.data, []
    causal = config.model.task == "causal-lm"
    if data.general_eval and not causal:
        problems.append(
            "data.general-eval: the forgetting check needs model.task = causal-lm (a "
            "classification head knows only the task's labels); remove data.general-eval"
        )
    if data.mixture and not causal:
        problems.append(
            "data.mixture: mixtures of instruction datasets need model.task = causal-lm; "
            "remove data.mixture or use data.source"
        )
    if data.mixture and data.source != "demo":
        problems.append(
            f"data.source = {data.source!r} is not used when data.mixture is set; list it as "
            "a [[data.mixture]] component instead"
        )
    return problems


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, dotted + ".")
        else:
            yield dotted, value


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        dotted = str(dotted)
        parts = dotted.split(".")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError([f"{dotted}: {part} is both a value and a section"])
        node[parts[-1]] = value
    return tree


def _normalise_keys(tree: Any) -> Any:
    """Accept snake_case keys from Python callers by turning them into kebab-case."""
    if isinstance(tree, dict):
        return {_kebab(str(k)): _normalise_keys(v) for k, v in tree.items()}
    return tree


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{_kebab(name)}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_known_keys(annotation, dotted + "."))
        else:
            keys.append(dotted)
            item = _list_item_model(annotation)
            if item is not None:  # [[data.mixture]] tables: their keys, listed as "[]"
                keys.extend(_known_keys(item, dotted + "[]."))
    return keys


def _list_item_model(annotation: Any) -> type[BaseModel] | None:
    args = getattr(annotation, "__args__", ())
    if getattr(annotation, "__origin__", None) is list and args:
        item = args[0]
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item
    return None


def _error_key(loc: Iterable[Any]) -> str:
    """``data.mixture[1].weight``: list positions in brackets, as in the TOML array."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f".{_kebab(str(part))}"
    return key.lstrip(".") or "(top level)"


def describe_error(error: Mapping[str, Any], model: type[BaseModel] | None = None) -> str:
    """One line for one validation error, naming the key; unknown keys get a did-you-mean
    among ``model``'s own keys (default: the run config's)."""
    model = model or RunConfig
    key = _error_key(error["loc"])
    if error["loc"] and not re.fullmatch(r"[\w.\[\]-]+", key):
        key = repr(key)  # a blank or odd key must still be visible: ' ': unknown key
    kind = error["type"]
    if kind == "extra_forbidden":
        section, _, leaf = re.sub(r"\[\d+\]", "[]", key).rpartition(".")
        if section:
            siblings = [k for k in _known_keys(model) if k.rpartition(".")[0] == section]
        else:
            siblings = [_kebab(name) for name in model.model_fields]
        names = {k.rpartition(".")[2]: k for k in siblings}
        suggestion = difflib.get_close_matches(leaf, list(names), n=1, cutoff=0.6)
        if suggestion:
            hint = f"did you mean {names[suggestion[0]]}?"
        else:
            hint = f"valid keys here: {', '.join(sorted(names))}"
        return f"{key}: unknown key; {hint}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "literal_error":
        return f"{key}: {message} (got {error.get('input')!r})"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{key}: {message} (got {error.get('input')!r})"
    return f"{key}: {message}"


def validate(tree: Mapping[str, Any], *, source: str | None = None) -> RunConfig:
    """Build a RunConfig from nested kebab- or snake-case dicts, reporting every problem."""
    try:
        return RunConfig.model_validate(_normalise_keys(dict(tree)))
    except ValidationError as exc:
        raise ConfigError([describe_error(e) for e in exc.errors()], source=source) from None


def parse_override(item: str) -> tuple[str, Any]:
    """Parse one ``--set section.key=value``; the value is read as TOML, else a string."""
    if "=" not in item:
        raise ConfigError([f"--set {item!r}: expected section.key=value"])
    key, raw = item.split("=", 1)
    key = _kebab(key.strip())
    if not key:
        raise ConfigError([f"--set {item!r}: empty key"])
    if any(not part for part in key.split(".")):
        raise ConfigError(
            [f"--set {item!r}: key {key!r} has an empty part; write section.key=value"]
        )
    try:
        parsed = tomllib.loads(f"v = {raw}")
    except tomllib.TOMLDecodeError:
        return key, raw
    # "1\nx = 2" parses as two TOML keys: that is not one value, so it stays a string.
    return key, parsed["v"] if list(parsed) == ["v"] else raw


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning decode errors into a ConfigError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file {path} does not exist"])
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [f"{path}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x}); TOML files must be UTF-8"]
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's error carries the line only in its text: "... (at line 3, column 9)".
        found = re.search(r"at line (\d+)", str(exc))
        where = f"{path}:{found.group(1)}" if found else str(path)
        raise ConfigError([f"{where}: not valid TOML: {exc}"]) from None


# Overriding one of these on the command line replaces the other one set in the file.
EXCLUSIVE_KEYS = {
    "privacy.noise-multiplier": "privacy.target-epsilon",
    "privacy.target-epsilon": "privacy.noise-multiplier",
}


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> RunConfig:
    """The CLI boundary: a TOML file (optional) plus ``--set`` overrides."""
    tree = _normalise_keys(load_toml(path) if path is not None else {})
    flat = dict(parse_override(item) for item in overrides)
    for key, rival in EXCLUSIVE_KEYS.items():
        if key in flat and rival not in flat:
            section, _, leaf = rival.partition(".")
            if isinstance(tree.get(section), dict):
                tree[section].pop(leaf, None)
    tree = _merge(tree, _unflatten(flat))
    return validate(tree, source=str(path) if path else None)


CONFIG_FILE_KEY = "config-file"
SET_KEY = "set"
OUTPUT_DIR_KEY = "output-dir"  # where the server writes; not part of the RunConfig
RESUME_KEY = "resume"  # true: continue the run in output-dir from its checkpoint
VERBOSE_KEY = "verbose"  # true: the ServerApp logs Flower's own INFO lines too
DEPLOYED_KEY = "deployed"  # true: organisations' nodes, each with its own data-path
APP_ROOT = Path(__file__).resolve().parent.parent


def _app_path(name: str) -> Path:
    """A config file named in run_config: as given, else relative to the app's own folder."""
    path = Path(name).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return APP_ROOT / path


def from_run_config(run_config: Mapping[str, Any]) -> RunConfig:
    """The Flower boundary: ``context.run_config`` (flat, dotted keys) to a RunConfig.

    Two keys are special, so that ``flwr run --run-config`` speaks like the CLI:
    ``config-file`` names a TOML file (relative paths are tried from the app folder too)
    and ``set`` holds space-separated ``section.key=value`` overrides, exactly as the CLI's
    ``--set``. Any other dotted key overrides too.
    """
    flat = dict(run_config)
    flat.pop(OUTPUT_DIR_KEY, None)
    flat.pop(RESUME_KEY, None)
    flat.pop(VERBOSE_KEY, None)
    flat.pop(DEPLOYED_KEY, None)
    config_file = flat.pop(CONFIG_FILE_KEY, None)
    try:
        overrides = shlex.split(str(flat.pop(SET_KEY, "") or ""))
    except ValueError as exc:  # an unbalanced quote
        raise ConfigError(
            [f"{SET_KEY}: cannot split into section.key=value items ({exc}); balance the quotes"]
        ) from None
    path = _app_path(str(config_file)) if config_file else None
    flat_tree = _unflatten(flat)
    config = load_config(path, overrides)
    if not flat_tree:
        return config
    tree = _merge(config.to_toml_dict(), _normalise_keys(flat_tree))
    return validate(tree, source=str(path) if path else "run_config")
