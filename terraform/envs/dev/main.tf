# pubq on GCP: one Pub/Sub queue module per queue in queues.yaml, the producer and worker on Cloud Run,
# Cloud SQL (Postgres 15, IAM auth, private IP), Secret Manager and alerting.

locals {
  queues_file  = coalesce(var.queues_file, "${path.root}/../../../queues.yaml")
  queue_config = yamldecode(file(local.queues_file))

  # Every queue with `defaults` merged in, over the built-in defaults of pkg/queue (used when the file's
  # `defaults` omits a field); backoff is merged one level deeper, as pkg/queue does. Only fields that
  # shape Pub/Sub resources are listed; terraform/check compares the result with pkg/queue's.
  builtin_defaults = {
    ack_deadline          = "60s"
    max_delivery_attempts = 20
    message_retention     = "168h"
    exactly_once          = false
    backoff               = { initial = "1s", max = "10m" }
  }
  file_defaults = merge(local.builtin_defaults, lookup(local.queue_config, "defaults", {}), {
    backoff = merge(local.builtin_defaults.backoff, lookup(lookup(local.queue_config, "defaults", {}), "backoff", {}))
  })
  queues = {
    for name, q in local.queue_config.queues : name => merge(local.file_defaults, q, {
      backoff = merge(local.file_defaults.backoff, lookup(q, "backoff", {}))
    })
  }

  labels = { app = "pubq", env = var.environment }

  pubsub_service_agent = "service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  # Where the binaries find queues.yaml: the same file, mounted from Secret Manager.
  queues_mount_dir = "/etc/pubq"
  queues_path      = "${local.queues_mount_dir}/queues.yaml"

  telemetry_roles = ["roles/cloudtrace.agent", "roles/logging.logWriter", "roles/monitoring.metricWriter"]

  # PUBQ_DATABASE_USER and OTEL_SERVICE_NAME are added per binary by modules/service.
  common_env = {
    PUBQ_PROJECT             = var.project_id
    PUBQ_QUEUES              = local.queues_path
    PUBQ_CLOUDSQL_INSTANCE   = google_sql_database_instance.pubq.connection_name
    PUBQ_CLOUDSQL_PRIVATE_IP = "true" # the instance has no public IP
    PUBQ_DATABASE_NAME       = google_sql_database.pubq.name
    PUBQ_GCP_LOG_PROJECT     = var.project_id # log entries link to their Cloud Trace traces
    OTEL_TRACES_EXPORTER     = "gcp"
    # Cloud Run kills an instance 10s after SIGTERM: running jobs (worker) and requests (producer)
    # get 6s, leaving room for the final outbox flush and the telemetry export.
    PUBQ_SHUTDOWN_TIMEOUT = "6s"
  }
  queues_secret_file = {
    queues = {
      secret  = google_secret_manager_secret.queues.secret_id
      version = google_secret_manager_secret_version.queues.version
      dir     = local.queues_mount_dir
      file    = "queues.yaml"
    }
  }
}

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_project_service" "apis" {
  for_each = toset([
    "cloudtrace.googleapis.com",
    "compute.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
  ])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

module "queue" {
  source   = "../../modules/queue"
  for_each = local.queues

  project                  = var.project_id
  name                     = each.key
  topic                    = each.value.topic
  subscription             = each.value.subscription
  dead_letter_topic        = each.value.dead_letter_topic
  dead_letter_subscription = each.value.dead_letter_subscription
  ack_deadline             = each.value.ack_deadline
  message_retention        = each.value.message_retention
  max_delivery_attempts    = each.value.max_delivery_attempts
  exactly_once             = each.value.exactly_once
  retry_minimum_backoff    = each.value.backoff.initial
  retry_maximum_backoff    = each.value.backoff.max
  labels                   = local.labels

  # Both relay the outbox (enqueues, retries, operators' replays). pubqctl publishes nothing: a
  # replay is an outbox row that a relay publishes.
  topic_publishers = {
    producer = module.producer.member
    worker   = module.worker.member
  }
  # Both run the outbox relay, which publishes every due row, dead letters included.
  dead_letter_publishers               = { worker = module.worker.member, producer = module.producer.member }
  subscription_subscribers             = { worker = module.worker.member }
  dead_letter_subscription_subscribers = { pubqctl = "serviceAccount:${google_service_account.pubqctl.email}" }
  pubsub_service_agent                 = local.pubsub_service_agent

  depends_on = [google_project_service.apis]
}

module "producer" {
  source = "../../modules/service"

  project    = var.project_id
  region     = var.region
  name       = "pubq-producer"
  account_id = "pubq-${var.environment}-producer"
  deploy     = var.deploy_services
  image      = var.producer_image
  labels     = local.labels

  env = local.common_env
  secret_env = {
    PUBQ_API_TOKENS = {
      secret  = google_secret_manager_secret.api_tokens.secret_id
      version = var.api_tokens_version
    }
  }
  secret_files  = local.queues_secret_file
  project_roles = local.telemetry_roles
  sql_instance  = google_sql_database_instance.pubq.name

  # Schedules fire from the producer: keep CPU and an instance around between requests.
  cpu_idle             = false
  min_instances        = var.producer_min_instances
  max_instances        = var.producer_max_instances
  health_path          = "/healthz"
  ingress              = var.producer_ingress
  invoker_iam_disabled = var.producer_invoker_iam_disabled
  invokers             = var.producer_invokers

  network             = google_compute_network.pubq.id
  subnetwork          = google_compute_subnetwork.run.id
  deletion_protection = var.sql_deletion_protection

  depends_on = [google_project_service.apis]
}

module "worker" {
  source = "../../modules/service"

  project    = var.project_id
  region     = var.region
  name       = "pubq-worker"
  account_id = "pubq-${var.environment}-worker"
  deploy     = var.deploy_services
  image      = var.worker_image
  labels     = local.labels

  # The worker applies database migrations at start-up (advisory-locked, safe with many instances).
  env           = merge(local.common_env, { PUBQ_MIGRATE = var.worker_migrate ? "true" : "false" })
  secret_files  = local.queues_secret_file
  project_roles = local.telemetry_roles
  sql_instance  = google_sql_database_instance.pubq.name

  # Pulls and the relay run without requests: CPU always allocated, never scaled to zero.
  cpu_idle      = false
  min_instances = var.worker_min_instances
  max_instances = var.worker_max_instances
  cpu           = var.worker_cpu
  memory        = var.worker_memory
  health_path   = "/healthz"
  ingress       = "INGRESS_TRAFFIC_INTERNAL_ONLY"

  network             = google_compute_network.pubq.id
  subnetwork          = google_compute_subnetwork.run.id
  deletion_protection = var.sql_deletion_protection

  depends_on = [google_project_service.apis]
}
