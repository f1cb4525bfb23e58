"""Deploys template.yaml to a CloudFormation engine that runs here, checks what it made, deletes it.

`make test` runs it (scripts/test.sh) with the Python of LocalStack's venv, which has boto3:

    deploy_check.py <repo root> <work dir> <the test stack's LocalStack data root> [fcfs-admin]

(its TLS certificate, `localstack-cert.pem` beside it, and the DynamoDB Local that install.sh
put in its `lib`, which this LocalStack shares read-only: there is no download here).

A private LocalStack (its own port and data root, apart from the test stack's) runs with its legacy
CloudFormation engine: the default one refuses the template's list parameters. Function packages
are a placeholder zip (no `sam build`: the check is about the stack's resources and wiring, not
the binaries, which other tests run). The stack must reach CREATE_COMPLETE; then what it created
is compared with what the runner and the functions expect (names, queues and redrive, the key
table, the API's routes, authorizer and single stage, schedules, alarms, the secret, every
function on the default architecture), and the stack is deleted. What this engine does not apply (reserved concurrency, the API key source) is covered
by tests/template_contract.rs instead. Every wait has a deadline; on failure the stack's events
and LocalStack's log tail are printed.
"""

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile

import boto3
import yaml

PORT = int(os.environ.get("FCFS_DEPLOY_CHECK_PORT", "4599"))
DYNAMODB_PORT = int(os.environ.get("FCFS_DEPLOY_CHECK_DYNAMODB_PORT", "4597"))
ENDPOINT = f"http://127.0.0.1:{PORT}"
STAGE = "deploycheck"
# The Lambda runtime version LocalStack 4.9.2 installs (localstack/services/lambda_/packages.py).
LAMBDA_RUNTIME = "v0.1.35-pre"
REGION = "us-east-1"
SERVICES = [
    "cloudformation", "s3", "sqs", "dynamodb", "lambda", "apigateway", "iam", "logs", "events",
    "sns", "cloudwatch", "secretsmanager", "ec2", "sts",
]


def log(message):
    print(f"[deploy-check] {message}", flush=True)


def wait_for(what, seconds, check, every=1.0):
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise SystemExit(f"deploy check: {what} not within {seconds} s")
        time.sleep(every)


class Sam(yaml.SafeLoader):
    """Reads the template's short-form intrinsics (!Ref, !GetAtt, …) as plain tagged values."""


def _tagged(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"!" + suffix: value}


Sam.add_multi_constructor("!", _tagged)


def start_localstack(python, work, stack_root):
    root = os.path.join(work, "localstack")
    lib = os.path.join(root, "var", "lib", "localstack", "lib")
    os.makedirs(lib, exist_ok=True)
    for shared in ("dynamodb-local", "java"):
        if not os.path.exists(os.path.join(lib, shared)):
            os.symlink(os.path.join(stack_root, "var", "lib", "localstack", "lib", shared), os.path.join(lib, shared))
    # Creating a function makes LocalStack fetch its Lambda runtime (the RIE) from GitHub first;
    # no function is ever invoked here, so a placeholder where the download would go stands in.
    # LocalStack keys that folder by the machine it runs on (x86_64 here), not by the functions'
    # Architectures, which the template makes arm64 by default.
    init = os.path.join(lib, "lambda-runtime", LAMBDA_RUNTIME, "x86_64", "var", "rapid", "init")
    os.makedirs(os.path.dirname(init), exist_ok=True)
    with open(init, "w") as f:
        f.write("#!/bin/sh\nexit 1\n")
    os.chmod(init, 0o755)
    certificate = os.path.join(os.path.dirname(stack_root), "localstack-cert.pem")
    shim = os.path.join(work, "docker-shim")
    # Lambda would start a container per function; there is none here, and nothing is invoked.
    with open(shim, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(shim, 0o755)
    env = dict(
        os.environ,
        OVERRIDE_IN_DOCKER="0",
        FILESYSTEM_ROOT=root,
        GATEWAY_LISTEN=f"127.0.0.1:{PORT}",
        LOCALSTACK_HOST=f"127.0.0.1:{PORT}",
        GATEWAY_SERVER="hypercorn",
        SERVICES=",".join(SERVICES),
        PROVIDER_OVERRIDE_CLOUDFORMATION="engine-legacy",
        DNS_ADDRESS="0",
        SKIP_SSL_CERT_DOWNLOAD="1",
        DISABLE_EVENTS="1",
        SQS_ENDPOINT_STRATEGY="path",
        DYNAMODB_LOCAL_PORT=str(DYNAMODB_PORT),
        DYNAMODB_IN_MEMORY="1",
        DOCKER_CMD=shim,
        CUSTOM_SSL_CERT_PATH=certificate,
    )
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS"):
        env.pop(name, None)
    try:
        with urllib.request.urlopen(f"{ENDPOINT}/_localstack/health", timeout=2):
            raise SystemExit(f"deploy check: port {PORT} already answers (a LocalStack an earlier check left?); stop it first")
    except OSError:
        pass
    logfile = open(os.path.join(work, "localstack.log"), "ab")
    process = subprocess.Popen(
        [python, "-m", "localstack.runtime.main"], env=env, stdout=logfile, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )

    def healthy():
        if process.poll() is not None:
            raise SystemExit(f"deploy check: LocalStack exited ({process.returncode}); see {work}/localstack.log")
        try:
            with urllib.request.urlopen(f"{ENDPOINT}/_localstack/health", timeout=2) as r:
                states = json.load(r).get("services", {})
            return all(states.get(s) in ("available", "running") for s in ("cloudformation", "s3"))
        except OSError:
            return False

    wait_for("LocalStack's health", 120, healthy)
    return process


def stop(process):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def client(service):
    return boto3.client(
        service, endpoint_url=ENDPOINT, region_name=REGION,
        aws_access_key_id="test", aws_secret_access_key="test",
    )


def placeholder_package(s3, bucket):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        z.writestr(info, "#!/bin/sh\necho placeholder >&2\nexit 1\n")
    s3.put_object(Bucket=bucket, Key="placeholder.zip", Body=buffer.getvalue())
    return f"s3://{bucket}/placeholder.zip"


def network(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i}.0/24", AvailabilityZone=f"{REGION}{az}")["Subnet"]["SubnetId"]
        for i, az in enumerate("ab")
    ]
    group = ec2.create_security_group(GroupName="fcfs-deploy-check", Description="check", VpcId=vpc)["GroupId"]
    return vpc, subnets, group


def failure_report(cfn, stack, work):
    try:
        events = cfn.describe_stack_events(StackName=stack)["StackEvents"]
        for e in reversed(events):
            if "FAILED" in e.get("ResourceStatus", ""):
                log(f"  {e['LogicalResourceId']}: {e['ResourceStatus']} {e.get('ResourceStatusReason', '')}")
    except Exception as e:  # the report must not hide the failure it reports
        log(f"  (no stack events: {e})")
    try:
        with open(os.path.join(work, "localstack.log"), "rb") as f:
            tail = f.read()[-4000:].decode(errors="replace")
        log("LocalStack's log ends:\n" + tail)
    except OSError:
        pass


def check(template, physical, clients):
    """What the stack made against what the code and the template expect: (problems, what was seen)."""
    problems = []
    seen = {}
    resources = template["Resources"]
    sqs, ddb, apigw, lam, events, cw = (clients[s] for s in ("sqs", "dynamodb", "apigateway", "lambda", "events", "cloudwatch"))

    queues = {}
    for logical, resource in resources.items():
        if resource["Type"] != "AWS::SQS::Queue":
            continue
        name = resource["Properties"]["QueueName"]["!Sub"].replace("${Stage}", STAGE)
        url = physical.get(logical, "")
        if not url.endswith("/" + name):
            problems.append(f"{logical}: queue {url!r}, expected one named {name}")
            continue
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        queues[logical] = (url, attributes)
        visibility = resource["Properties"].get("VisibilityTimeout")
        if visibility is not None and int(attributes["VisibilityTimeout"]) != visibility:
            problems.append(f"{name}: visibility {attributes['VisibilityTimeout']}, template {visibility}")
        redrive = resource["Properties"].get("RedrivePolicy")
        if redrive:
            actual = json.loads(attributes.get("RedrivePolicy", "{}"))
            dlq = redrive["deadLetterTargetArn"]["!GetAtt"].split(".")[0]
            dlq_name = resources[dlq]["Properties"]["QueueName"]["!Sub"].replace("${Stage}", STAGE)
            if not str(actual.get("deadLetterTargetArn", "")).endswith(":" + dlq_name) or int(actual.get("maxReceiveCount", 0)) != redrive["maxReceiveCount"]:
                problems.append(f"{name}: redrive {actual}, expected {dlq_name} after {redrive['maxReceiveCount']}")

    seen["queues"] = len(queues)
    table = ddb.describe_table(TableName=f"fcfs-{STAGE}-api-keys")["Table"]
    if [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]] != [("keyHash", "HASH")]:
        problems.append(f"key table schema {table['KeySchema']}")
    indexes = sorted(i["IndexName"] for i in table.get("GlobalSecondaryIndexes", []))
    if indexes != ["by-display-id", "by-partner"]:
        problems.append(f"key table indexes {indexes}")

    functions = {}
    for logical, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        name = resource["Properties"]["FunctionName"]["!Sub"].replace("${Stage}", STAGE)
        try:
            functions[logical] = lam.get_function_configuration(FunctionName=name)
        except lam.exceptions.ResourceNotFoundException:
            problems.append(f"{logical}: no function {name}")
    for logical, resource in resources.items():
        destination = (resource.get("Properties", {}).get("EventInvokeConfig") or {}).get("DestinationConfig")
        if not destination or logical not in functions:
            continue
        queue = destination["OnFailure"]["Destination"]["!GetAtt"].split(".")[0]
        expected = queues.get(queue, ("", {}))[1].get("QueueArn")
        try:
            config = lam.get_function_event_invoke_config(FunctionName=functions[logical]["FunctionName"])
            actual = config["DestinationConfig"]["OnFailure"].get("Destination")
        except lam.exceptions.ResourceNotFoundException:
            actual = None
        if actual != expected:
            problems.append(f"{logical}: failed invocations go to {actual}, expected {expected}")
        seen["failure destinations"] = seen.get("failure destinations", 0) + 1
    variables = {f: c.get("Environment", {}).get("Variables", {}) for f, c in functions.items()}
    urls = {url: logical for logical, (url, _) in queues.items()}
    for f, env in variables.items():
        for name, value in env.items():
            if name.endswith("_QUEUE_URL") and value not in urls:
                problems.append(f"{f}: {name}={value} is no queue of the stack")
            if name == "DATABASE_SECRET_ARN" and value != clients["secret_arn"]:
                problems.append(f"{f}: {name}={value}, the deploy gave {clients['secret_arn']}")

    seen["functions"] = len(functions)
    # No Architecture is given here: every function must be on the parameter's default (arm64).
    architecture = template["Parameters"]["Architecture"]["Default"]
    for logical, config in functions.items():
        if config.get("Architectures") != [architecture]:
            problems.append(f"{logical}: architectures {config.get('Architectures')}, the default is {architecture}")
    seen["architecture"] = architecture
    api = next((a for a in apigw.get_rest_apis()["items"] if a["name"] == f"fcfs-{STAGE}-api"), None)
    if api is None:
        problems.append(f"no REST API fcfs-{STAGE}-api")
    else:
        routes = set()
        for r in apigw.get_resources(restApiId=api["id"], limit=500)["items"]:
            for method in r.get("resourceMethods", {}):
                routes.add((method, r["path"]))
        expected = set()
        for resource in resources.values():
            for event in (resource.get("Properties", {}).get("Events") or {}).values():
                if event["Type"] == "Api":
                    expected.add((event["Properties"]["Method"].upper(), event["Properties"]["Path"]))
        seen["routes"] = len(expected & routes)
        if not expected <= routes:
            problems.append(f"API routes missing: {sorted(expected - routes)}")
        authorizers = apigw.get_authorizers(restApiId=api["id"])["items"]
        if [(a["type"], a.get("identitySource")) for a in authorizers] != [("REQUEST", "method.request.header.X-API-KEY")]:
            problems.append(f"authorizers {[(a['name'], a['type'], a.get('identitySource')) for a in authorizers]}")
        # API Gateway's own answers: the template's GatewayResponses, JSON with a code.
        wanted = {}
        for resource in resources.values():
            if resource.get("Type") == "AWS::Serverless::Api":
                wanted = resource["Properties"].get("GatewayResponses") or {}
        made = {g["responseType"]: g for g in apigw.get_gateway_responses(restApiId=api["id"], limit=500)["items"]}
        if wanted and all(made.get(kind, {}).get("defaultResponse", True) for kind in wanted):
            # SAM puts them in the API's OpenAPI body (x-amazon-apigateway-gateway-responses),
            # which LocalStack's import ignores: the engine cannot show them; the contract test
            # (tests/template_contract.rs) holds the template to docs/errors.md instead.
            seen["gateway responses (not applied by this engine)"] = len(wanted)
        else:
            for kind, spec in wanted.items():
                got = made.get(kind, {})
                template = (got.get("responseTemplates") or {}).get("application/json")
                if template != spec["ResponseTemplates"]["application/json"] or (
                        "StatusCode" in spec and got.get("statusCode") != spec["StatusCode"]):
                    problems.append(f"gateway response {kind}: {got}")
            seen["gateway responses"] = len(wanted)
        stages = sorted(s["stageName"] for s in apigw.get_stages(restApiId=api["id"])["item"])
        if stages != [STAGE]:
            problems.append(f"API stages {stages}, expected only {STAGE}")

    rules = {r["Name"]: r for r in events.list_rules()["Rules"]}
    for logical, resource in resources.items():
        for event in (resource.get("Properties", {}).get("Events") or {}).values():
            if event["Type"] != "Schedule":
                continue
            expression = event["Properties"]["Schedule"]
            found = [r for r in rules.values() if r.get("ScheduleExpression") == expression
                     and any(t["Arn"] == functions.get(logical, {}).get("FunctionArn")
                             for t in events.list_targets_by_rule(Rule=r["Name"])["Targets"])]
            if not found:
                problems.append(f"{logical}: no rule {expression!r} targets it")
            seen["schedules"] = seen.get("schedules", 0) + len(found[:1])

    alarms = {a["AlarmName"] for a in cw.describe_alarms(MaxRecords=100)["MetricAlarms"]}
    for logical, resource in resources.items():
        if resource["Type"] == "AWS::CloudWatch::Alarm":
            name = resource["Properties"]["AlarmName"]
            name = name["!Sub"].replace("${Stage}", STAGE) if isinstance(name, dict) else name
            if name not in alarms:
                problems.append(f"{logical}: no alarm {name}")
            else:
                seen["alarms"] = seen.get("alarms", 0) + 1
    return problems, seen


def preflight(admin, root):
    """`fcfs-admin preflight` against this account (LocalStack answers Lambda's and API Gateway's
    account settings), with the stack just deployed: it must read them and say the stack fits."""
    env = dict(os.environ, AWS_ENDPOINT_URL=ENDPOINT, AWS_REGION=REGION, AWS_ACCESS_KEY_ID="test",
               AWS_SECRET_ACCESS_KEY="test")
    env.pop("AWS_ENDPOINT_URL_SQS", None)
    run = subprocess.run(
        [admin, "preflight", "--template", os.path.join(root, "template.yaml"), "--param", f"Stage={STAGE}"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    if run.returncode != 0:
        raise SystemExit(f"deploy check: fcfs-admin preflight exited {run.returncode}:\n{run.stderr}{run.stdout}")
    report = json.loads(run.stdout)
    if (not report["fits"] or report["reservedNeeded"] <= 0 or report["concurrencyLimit"] <= 0
            or not report["databaseFits"] or report["databaseConnectionsAtMost"] <= 0):
        raise SystemExit(f"deploy check: fcfs-admin preflight reported {report}")
    log(f"fcfs-admin preflight: fits, {report['reservedNeeded']} of {report['reservedAvailable']} reservable "
        f"(limit {report['concurrencyLimit']}), at most {report['databaseConnectionsAtMost']} of "
        f"{report['databaseMaxConnections']} database connections, sale rate {report['saleRate']}/s")


def main():
    # A stopped `make test` ends this check through its `finally`, which stops the LocalStack.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("deploy check: terminated"))
    root, work, stack_root = sys.argv[1], sys.argv[2], sys.argv[3]
    admin = sys.argv[4] if len(sys.argv) > 4 else None
    os.makedirs(work, exist_ok=True)
    text = open(os.path.join(root, "template.yaml")).read()
    template = yaml.load(text, Loader=Sam)
    started = time.monotonic()
    process = start_localstack(sys.executable, work, stack_root)
    log(f"LocalStack (legacy CloudFormation engine) up on {ENDPOINT} in {time.monotonic() - started:.0f} s")
    stack = f"fcfs-{STAGE}"
    clients = {s: client(s) for s in ("s3", "sqs", "dynamodb", "apigateway", "lambda", "events", "cloudwatch", "cloudformation", "ec2", "secretsmanager")}
    cfn = clients["cloudformation"]
    try:
        s3 = clients["s3"]
        s3.create_bucket(Bucket="fcfs-deploy-check")
        package = placeholder_package(s3, "fcfs-deploy-check")
        deployable = re.sub(r"(?m)^(\s+)CodeUri: \.\s*$", rf"\1CodeUri: {package}", text)
        # Over CloudFormation's 51,200-byte inline limit: from S3, as `sam deploy` sends it.
        s3.put_object(Bucket="fcfs-deploy-check", Key="template.yaml", Body=deployable.encode())
        vpc, subnets, group = network(clients["ec2"])
        secret = clients["secretsmanager"].create_secret(
            Name=f"fcfs-{STAGE}-database", SecretString=json.dumps({"username": "u", "password": "p", "host": "db"}))
        clients["secret_arn"] = secret["ARN"]
        parameters = {
            "Stage": STAGE, "VpcId": vpc, "SubnetIds": ",".join(subnets), "SecurityGroupIds": group,
            "RedisUrl": "rediss://cache.example:6379", "RedisClusterMode": "true",
            "DatabaseSecretArn": secret["ARN"], "CreateInterfaceEndpoints": "true",
            "EndpointSubnetIds": ",".join(subnets), "RouteTableIds": "",
        }
        declared = template.get("Parameters", {})
        unknown = set(parameters) - set(declared)
        if unknown:
            raise SystemExit(f"deploy check: parameters the template does not declare: {sorted(unknown)}")
        deploy_started = time.monotonic()
        cfn.create_stack(
            StackName=stack, TemplateURL=f"{ENDPOINT}/fcfs-deploy-check/template.yaml",
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
        )

        def settled(goal):
            def status():
                try:
                    s = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
                except cfn.exceptions.ClientError as e:
                    return "DELETE_COMPLETE" if goal == "DELETE_COMPLETE" and "does not exist" in str(e) else None
                return s if not s.endswith("_IN_PROGRESS") else None
            return status

        status = wait_for("the stack's creation", 420, settled("CREATE_COMPLETE"), every=3)
        if status != "CREATE_COMPLETE":
            failure_report(cfn, stack, work)
            raise SystemExit(f"deploy check: the stack ended {status}")
        made = cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]
        log(f"CREATE_COMPLETE: {len(made)} resources in {time.monotonic() - deploy_started:.0f} s")
        physical = {r["LogicalResourceId"]: r.get("PhysicalResourceId", "") for r in made}
        problems, seen = check(template, physical, clients)
        if problems:
            raise SystemExit("deploy check: the stack differs from what the code expects:\n  " + "\n  ".join(problems))
        log(f"as the code expects: {seen} (queues with their redrive, functions with their variables), the key table, "
            "the authorizer and the one stage")
        if admin:
            preflight(admin, root)
        delete_started = time.monotonic()
        cfn.delete_stack(StackName=stack)
        status = wait_for("the stack's deletion", 300, settled("DELETE_COMPLETE"), every=3)
        if status != "DELETE_COMPLETE":
            failure_report(cfn, stack, work)
            raise SystemExit(f"deploy check: deleting the stack ended {status}")
        log(f"DELETE_COMPLETE in {time.monotonic() - delete_started:.0f} s; whole check {time.monotonic() - started:.0f} s")
    finally:
        stop(process)


if __name__ == "__main__":
    main()
