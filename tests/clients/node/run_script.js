// Runs the shared client script (tests/clients/clientscript.py) with Node's mysql2 driver.
//
// Usage: node run_script.js PLAN.json
// The plan holds the connection, the steps, and the paths of the BLOB and the LOCAL INFILE.
// Prints {"observed": {step name: observation}} as JSON on stdout; on an unexpected failure it
// also prints "failure" and exits 1. Prepared steps and the BLOB use execute() (server-side
// prepared statements, binary protocol); everything else uses query() (text protocol) on one
// multipleStatements connection.

'use strict';

const crypto = require('crypto');
const fs = require('fs');
const mysql = require('mysql2/promise');

const BLOB_PARAM = '<the 20 MiB blob>';

function cell(value) {
  if (value === null || typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  if (typeof value === 'number' || typeof value === 'bigint') return String(value);
  throw new Error(`unexpected column value ${value}`);
}

function rowsOf(rows) {
  return rows.map((row) => row.map(cell));
}

function digest(data) {
  return { length: data.length, sha256: crypto.createHash('sha256').update(data).digest('hex') };
}

async function errnoOf(conn, sql) {
  try {
    await conn.query(sql);
  } catch (err) {
    return err.errno;
  }
  return null;
}

async function runStep(conn, step, plan) {
  const params = step.params.map((p) => (p === BLOB_PARAM ? fs.readFileSync(plan.blob_path) : p));
  switch (step.kind) {
    case 'exec':
      return (await conn.query(step.sql))[0].affectedRows;
    case 'blob_write':
      return (await conn.execute(step.sql, params))[0].affectedRows;
    case 'query':
      return rowsOf((await conn.query(step.sql))[0]);
    case 'begin':
      return conn.beginTransaction();
    case 'commit':
      return conn.commit();
    case 'rollback':
      return conn.rollback();
    case 'prepared': {
      const [result] = await conn.execute(step.sql, params);
      return Array.isArray(result) ? rowsOf(result) : result.affectedRows;
    }
    case 'blob_read':
      return digest((await conn.execute(step.sql))[0][0][0]);
    case 'multi': {
      const [results] = await conn.query(step.sql);
      return results.filter((r) => Array.isArray(r)).map(rowsOf);
    }
    case 'load_local': {
      const factory = () => fs.createReadStream(plan.infile_path);
      return (await conn.query({ sql: step.sql, infileStreamFactory: factory }))[0].affectedRows;
    }
    case 'error':
      return errnoOf(conn, step.sql);
    default:
      throw new Error(`unknown step kind ${step.kind}`);
  }
}

async function main() {
  const plan = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const observed = {};
  const conn = await mysql.createConnection({
    ...plan.connection,
    multipleStatements: true,
    rowsAsArray: true,
    supportBigNumbers: true,
    bigNumberStrings: true,
  });
  try {
    for (const step of plan.steps) {
      const value = await runStep(conn, step, plan);
      observed[step.name] = value === undefined ? null : value;
    }
  } catch (err) {
    process.stdout.write(JSON.stringify({ observed, failure: String(err.stack || err) }));
    process.exitCode = 1;
    return;
  } finally {
    await conn.end();
  }
  process.stdout.write(JSON.stringify({ observed }));
}

main();
