variable "project" {
  description = "GCP project id."
  type        = string
}

variable "region" {
  description = "Cloud Run region."
  type        = string
}

variable "name" {
  description = "Cloud Run service name; also OTEL_SERVICE_NAME."
  type        = string
}

variable "account_id" {
  description = "Service account id (6-30 chars) of the identity this binary runs as."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.account_id))
    error_message = "account_id must be 6-30 lowercase letters, digits or dashes."
  }
}

variable "deploy" {
  description = "Create the Cloud Run service. False during bootstrap: the identity, its IAM and its database user exist before the first image is deployed."
  type        = bool
  default     = true
}

variable "image" {
  description = "Container image (Artifact Registry), e.g. REGION-docker.pkg.dev/PROJECT/pubq/worker:TAG. Required when deploy is true."
  type        = string
  default     = null
}

variable "env" {
  description = "Plain environment variables. The module adds OTEL_SERVICE_NAME and, with sql_instance, PUBQ_DATABASE_USER."
  type        = map(string)
  default     = {}
}

variable "secret_env" {
  description = "Environment variables read from Secret Manager: name => {secret = secret id, version}. The service account gets secretAccessor on each of these secrets only."
  type = map(object({
    secret  = string
    version = string
  }))
  default = {}
}

variable "secret_files" {
  description = "Secret Manager secrets mounted as files: volume name => {secret, version, dir, file}; the file appears at dir/file. The service account gets secretAccessor on each."
  type = map(object({
    secret  = string
    version = string
    dir     = string
    file    = string
  }))
  default = {}
}

variable "project_roles" {
  description = "Project-level roles for the service account (telemetry writers only; Cloud SQL roles come from sql_instance)."
  type        = set(string)
  default     = []
}

variable "sql_instance" {
  description = "Cloud SQL instance name. When set, the service account becomes an IAM database user and gets roles/cloudsql.client and roles/cloudsql.instanceUser, conditioned on this instance."
  type        = string
  default     = null
}

variable "min_instances" {
  description = "Minimum Cloud Run instances."
  type        = number
  default     = 0
}

variable "max_instances" {
  description = "Maximum Cloud Run instances."
  type        = number
  default     = 10
}

variable "cpu" {
  description = "vCPUs per instance (Cloud Run limit string)."
  type        = string
  default     = "1"
}

variable "memory" {
  description = "Memory per instance (Cloud Run limit string)."
  type        = string
  default     = "512Mi"
}

variable "cpu_idle" {
  description = "Throttle CPU outside requests. Must be false for anything that works without requests (Pub/Sub pulls, the outbox relay, cron)."
  type        = bool
  default     = true
}

variable "max_request_concurrency" {
  description = "Concurrent HTTP requests per instance."
  type        = number
  default     = 80
}

variable "request_timeout" {
  description = "HTTP request timeout, provider duration format."
  type        = string
  default     = "60s"
}

variable "health_path" {
  description = "HTTP path for the startup and liveness probes; null keeps Cloud Run's default TCP startup probe."
  type        = string
  default     = null
}

variable "ingress" {
  description = "Cloud Run ingress: INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  type        = string
  default     = "INGRESS_TRAFFIC_INTERNAL_ONLY"
}

variable "invoker_iam_disabled" {
  description = "Skip Cloud Run's IAM invoker check, for services that authenticate callers themselves (the producer's bearer tokens use the Authorization header Cloud Run IAM would claim). Pair it with internal ingress."
  type        = bool
  default     = false
}

variable "invokers" {
  description = "Members granted roles/run.invoker on this service, keyed by a static name."
  type        = map(string)
  default     = {}
}

variable "network" {
  description = "VPC network id for Direct VPC egress (reaches the Cloud SQL private IP)."
  type        = string
}

variable "subnetwork" {
  description = "Subnetwork id for Direct VPC egress."
  type        = string
}

variable "deletion_protection" {
  description = "Provider-side deletion protection for the Cloud Run service."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels for the service."
  type        = map(string)
  default     = {}
}
