"""Building blocks of the reliability scenarios, one module per concern: `children` (reconciler child
processes), `faults` (a stack service stopped or SIGKILLed, then started again), `load` (real Keycloak changes),
`audit` (committed offsets vs the store), `watch` (the store's change streams: users, a lease), `secrets` (the
secrets scan), `requests` (what reached Keycloak), `records` (run records)."""

from tests.reliability.harness.audit import (
    CommitCheck as CommitCheck,
)
from tests.reliability.harness.audit import (
    OffsetAudit as OffsetAudit,
)
from tests.reliability.harness.audit import (
    keycloak_versions as keycloak_versions,
)
from tests.reliability.harness.audit import (
    store_versions as store_versions,
)
from tests.reliability.harness.audit import (
    update_version as update_version,
)
from tests.reliability.harness.audit import (
    wait_applied as wait_applied,
)
from tests.reliability.harness.audit import (
    wait_converged as wait_converged,
)
from tests.reliability.harness.children import (
    CliResult as CliResult,
)
from tests.reliability.harness.children import (
    ReconcilerProcess as ReconcilerProcess,
)
from tests.reliability.harness.children import (
    child_env as child_env,
)
from tests.reliability.harness.children import (
    run_cli as run_cli,
)
from tests.reliability.harness.children import (
    scenario_settings as scenario_settings,
)
from tests.reliability.harness.children import (
    verify_in_sync as verify_in_sync,
)
from tests.reliability.harness.faults import (
    Outage as Outage,
)
from tests.reliability.harness.faults import (
    sigkill as sigkill,
)
from tests.reliability.harness.load import (
    UpdateStream as UpdateStream,
)
from tests.reliability.harness.load import (
    import_users as import_users,
)
from tests.reliability.harness.load import (
    personal_users as personal_users,
)
from tests.reliability.harness.load import (
    seed_users as seed_users,
)
from tests.reliability.harness.load import (
    version_of as version_of,
)
from tests.reliability.harness.records import (
    collect_run_errors as collect_run_errors,
)
from tests.reliability.harness.records import (
    run_records as run_records,
)
from tests.reliability.harness.records import (
    value as value,
)
from tests.reliability.harness.requests import (
    audit_requests as audit_requests,
)
from tests.reliability.harness.secrets import (
    SecretsRegistry as SecretsRegistry,
)
from tests.reliability.harness.watch import (
    LeaseWatcher as LeaseWatcher,
)
from tests.reliability.harness.watch import (
    LeaseWrite as LeaseWrite,
)
from tests.reliability.harness.watch import (
    StoreWatcher as StoreWatcher,
)
from tests.reliability.harness.watch import (
    StoreWrite as StoreWrite,
)
