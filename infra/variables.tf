variable "project_id" {
  description = "The Google Cloud project to deploy into."
  type        = string
}

variable "region" {
  description = "Region of the functions, the Cloud SQL instance and the scheduler job."
  type        = string
  default     = "europe-west1"
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "jobs"
}

variable "source_bucket" {
  description = "Bucket holding the functions' source archive (cloudbuild.yaml uploads it)."
  type        = string
}

variable "source_object" {
  description = "The source archive's object name in source_bucket."
  type        = string
  default     = "source/jobs-pipeline.zip"
}

# --- Cloud SQL -------------------------------------------------------------------------------

variable "db_tier" {
  description = "Cloud SQL machine tier."
  type        = string
  default     = "db-custom-1-3840"
}

variable "db_max_connections" {
  description = "The instance's max_connections flag; see connection_budget in functions.tf."
  type        = number
  default     = 100
}

variable "db_reserved_connections" {
  description = "Connections kept free for superusers, migrations and psql."
  type        = number
  default     = 7
}

variable "db_private_ip" {
  description = "Give the instance a private IP on db_network instead of a public one."
  type        = bool
  default     = false
}

variable "db_network" {
  description = "VPC self link for the private IP (with private services access set up)."
  type        = string
  default     = ""
}

variable "vpc_connector" {
  description = "Serverless VPC Access connector the functions use to reach a private IP."
  type        = string
  default     = ""
}

variable "deletion_protection" {
  description = "Protect the Cloud SQL instance from terraform destroy."
  type        = bool
  default     = true
}

# --- Functions -------------------------------------------------------------------------------

variable "db_pool_size" {
  description = "DB_POOL_SIZE of every function instance."
  type        = number
  default     = 2
}

variable "db_max_overflow" {
  description = "DB_MAX_OVERFLOW of every function instance."
  type        = number
  default     = 1
}

variable "max_instances" {
  description = "Max instances per function. Together with the pool they must fit max_connections."
  type        = object({ submit = number, process = number, sweep = number })
  default     = { submit = 10, process = 20, sweep = 1 }
}

variable "concurrency" {
  description = "Requests one instance serves at once (a connection is held per statement only)."
  type        = object({ submit = number, process = number, sweep = number })
  default     = { submit = 8, process = 8, sweep = 1 }
}

variable "ack_deadline_s" {
  description = "Ack deadline of the jobs push subscription, and process's timeout (max 600)."
  type        = number
  default     = 600
}

variable "sweep_timeout_s" {
  description = "Timeout of the sweep function."
  type        = number
  default     = 300
}

variable "sweep_time_budget_s" {
  description = "A sweep pass stops taking work after this; must stay under sweep_timeout_s."
  type        = number
  default     = 240
}

variable "sweep_schedule" {
  description = "Cron schedule of the sweep (Cloud Scheduler's minimum is every minute)."
  type        = string
  default     = "* * * * *"
}

variable "retention_days" {
  description = "Terminal jobs older than this are deleted by the sweep."
  type        = number
  default     = 30
}

variable "max_delivery_attempts" {
  description = "Deliveries of a job message before it goes to the dead-letter topic (5-100)."
  type        = number
  default     = 5
}

variable "allow_public_submit" {
  description = <<-EOT
    Let anyone reach submit over HTTPS (allUsers invoker); submit still verifies its own bearer
    tokens. Off by default: only submit_invokers may call it.
  EOT
  type        = bool
  default     = false
}

variable "submit_invokers" {
  description = "IAM members allowed to call submit when it is private (e.g. serviceAccount:...)."
  type        = list(string)
  default     = []
}
