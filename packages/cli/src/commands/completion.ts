// anodyne completion: prints a bash or zsh completion script for the CLI's command names.
import { type Command, CommanderError } from 'commander';
import { EXIT } from '../exit.js';
import { out } from '../print.js';

export function register(p: Command): void {
  p.command('completion <shell>')
    .description('print a completion script (bash or zsh)')
    .action((shell: string) => {
      // p is the root: by the time this runs every command has been registered on it.
      const names = p.commands.map((c) => c.name()).join(' ');
      if (shell === 'bash') {
        const complete = `[ "$COMP_CWORD" -eq 1 ] && COMPREPLY=( $(compgen -W "${names}" -- "$cur") );`;
        return out(`_anodyne() { local cur=\${COMP_WORDS[COMP_CWORD]}; ${complete} }\ncomplete -F _anodyne anodyne`);
      }
      if (shell === 'zsh') return out(`#compdef anodyne\n_arguments '1: :(${names})'`);
      throw new CommanderError(EXIT.usage, 'usage', `completion supports bash and zsh, not ${shell}`);
    });
}
