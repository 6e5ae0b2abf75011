variable "project_id" {
  description = "GCP project id everything is created in (PUBQ_PROJECT)."
  type        = string
}

variable "region" {
  description = "Region for Cloud Run, Cloud SQL and the subnetwork."
  type        = string
  default     = "europe-west1"
}

variable "environment" {
  description = "Short environment name used in resource names and labels (dev, staging, prod)."
  type        = string
  default     = "dev"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,9}$", var.environment))
    error_message = "environment must be 2-10 lowercase letters or digits."
  }
}

variable "queues_file" {
  description = "Path to queues.yaml; null means the repository's queues.yaml (path.root/../../../queues.yaml). Topics, subscriptions and the file mounted into the binaries all come from it."
  type        = string
  default     = null
}

variable "deploy_services" {
  description = "Create the Cloud Run services. Set false for the first (bootstrap) apply, before images, the API token secret value and the database grants exist."
  type        = bool
  default     = true
}

variable "producer_image" {
  description = "Producer container image, e.g. europe-west1-docker.pkg.dev/PROJECT/pubq/producer:TAG."
  type        = string
  default     = null
}

variable "worker_image" {
  description = "Worker container image, e.g. europe-west1-docker.pkg.dev/PROJECT/pubq/worker:TAG."
  type        = string
  default     = null
}

variable "api_tokens_version" {
  description = "Secret Manager version of PUBQ_API_TOKENS the producer reads. Pin a number (\"3\") to roll the producer onto a new version with an apply; \"latest\" is read when an instance starts."
  type        = string
  default     = "latest"
}

variable "producer_min_instances" {
  description = "Minimum producer instances. At least 1: the producer fires cron schedules, which need a running instance."
  type        = number
  default     = 1

  validation {
    condition     = var.producer_min_instances >= 1
    error_message = "producer_min_instances must be at least 1 (schedules run in the producer)."
  }
}

variable "producer_max_instances" {
  description = "Maximum producer instances."
  type        = number
  default     = 10
}

variable "producer_ingress" {
  description = "Producer ingress (INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY, INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER)."
  type        = string
  default     = "INGRESS_TRAFFIC_INTERNAL_ONLY"
}

variable "producer_invoker_iam_disabled" {
  description = "Let requests reach the producer without Cloud Run IAM: callers authenticate with bearer tokens (PUBQ_API_TOKENS) in the Authorization header, and ingress stays internal. Set false to require roles/run.invoker (producer_invokers) as well; callers then need another header for the pubq token."
  type        = bool
  default     = true
}

variable "producer_invokers" {
  description = "Members granted roles/run.invoker on the producer, keyed by a static name, e.g. { platform = \"serviceAccount:platform@PROJECT.iam.gserviceaccount.com\" }; only matters with producer_invoker_iam_disabled = false."
  type        = map(string)
  default     = {}
}

variable "worker_min_instances" {
  description = "Minimum worker instances; at least 1, since the worker pulls and relays without requests."
  type        = number
  default     = 1

  validation {
    condition     = var.worker_min_instances >= 1
    error_message = "worker_min_instances must be at least 1."
  }
}

variable "worker_max_instances" {
  description = "Maximum worker instances (see terraform/README.md for scaling on backlog)."
  type        = number
  default     = 10
}

variable "worker_migrate" {
  description = "Let the worker apply database migrations at start-up (PUBQ_MIGRATE). Its IAM database user then owns the schema; see docs/gcp.md for the one-time grants."
  type        = bool
  default     = true
}

variable "worker_cpu" {
  description = "vCPUs per worker instance."
  type        = string
  default     = "1"
}

variable "worker_memory" {
  description = "Memory per worker instance."
  type        = string
  default     = "1Gi"
}

variable "network_cidr" {
  description = "CIDR of the subnetwork Cloud Run egresses through (Direct VPC egress)."
  type        = string
  default     = "10.20.0.0/24"
}

variable "sql_tier" {
  description = "Cloud SQL machine tier."
  type        = string
  default     = "db-custom-1-3840"
}

variable "sql_availability_type" {
  description = "ZONAL or REGIONAL (HA) Cloud SQL."
  type        = string
  default     = "ZONAL"
}

variable "sql_deletion_protection" {
  description = "Protect the Cloud SQL instance and the Cloud Run services from terraform destroy."
  type        = bool
  default     = true
}

variable "database_name" {
  description = "Postgres database name (PUBQ_DATABASE_NAME)."
  type        = string
  default     = "pubq"
}

variable "ops_members" {
  description = "Members allowed to impersonate the pubqctl service account (roles/iam.serviceAccountTokenCreator), keyed by a static name, e.g. { oncall = \"group:oncall@example.com\" }."
  type        = map(string)
  default     = {}
}

variable "alert_notification_channels" {
  description = "Monitoring notification channel ids for the queue alert policies."
  type        = list(string)
  default     = []
}

variable "alert_oldest_unacked_seconds" {
  description = "Default alert threshold on a worker subscription's oldest_unacked_message_age, in seconds."
  type        = number
  default     = 600
}

variable "alert_oldest_unacked_seconds_by_queue" {
  description = "Per-queue overrides of alert_oldest_unacked_seconds, e.g. { critical = 120 }."
  type        = map(number)
  default     = {}
}
